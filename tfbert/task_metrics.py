"""Metrics of multi-label and regression predictions, all computed by scikit-learn and SciPy.

Multi-label: micro/macro/weighted/samples precision-recall-F1, subset accuracy, Hamming loss, binary
cross-entropy, per-label precision/recall/F1/support and confusion counts (tn, fp, fn, tp) at the given
thresholds. Regression: MSE, RMSE, MAE, R², Pearson and Spearman correlation.

Example:
    >>> import numpy as np
    >>> result = evaluate_multi_label(np.array([[0.9, 0.2], [0.4, 0.7]]), np.array([[1, 0], [1, 1]]),
    ...                               ["a", "b"], [0.5, 0.5])
    >>> result.metrics["subset_accuracy"], result.metrics["micro_f1"]
    (0.5, 0.8)
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from tfbert.evaluation import Evaluation
from tfbert.tasks import decide


def evaluate_multi_label(probabilities: np.ndarray, gold: np.ndarray, label_names: list[str],
                         thresholds: Sequence[float], texts: Optional[list[str]] = None,
                         row_ids: Optional[list[int]] = None, top_errors: int = 20) -> Evaluation:
    """Score sigmoid ``probabilities`` [n, labels] against 0/1 ``gold`` [n, labels] at per-label ``thresholds``.

    ``confusion`` holds each label's [[tn, fp], [fn, tp]]; ``errors`` the rows whose predicted label set is
    wrong, the most confident wrong decision first.
    """
    from sklearn.metrics import (accuracy_score, classification_report, hamming_loss, log_loss,
                                 multilabel_confusion_matrix, precision_recall_fscore_support)

    gold = (np.asarray(gold) > 0).astype(np.int64)
    predicted = decide(probabilities, thresholds).astype(np.int64)
    clipped = np.clip(probabilities.astype(np.float64), 1e-7, 1 - 1e-7)
    metrics = {
        "n": int(len(gold)),
        "loss": float(np.mean([log_loss(gold[:, j], clipped[:, j], labels=[0, 1]) for j in range(gold.shape[1])])),
        "subset_accuracy": float(accuracy_score(gold, predicted)),
        "hamming_loss": float(hamming_loss(gold, predicted)),
    }
    for average in ("micro", "macro", "weighted", "samples"):
        precision, recall, f1, _ = precision_recall_fscore_support(gold, predicted, average=average, zero_division=0)
        metrics.update({f"{average}_precision": float(precision), f"{average}_recall": float(recall),
                        f"{average}_f1": float(f1)})
    precision, recall, f1, support = precision_recall_fscore_support(gold, predicted, average=None, zero_division=0)
    metrics["per_label"] = {name: {"precision": float(precision[j]), "recall": float(recall[j]), "f1": float(f1[j]),
                                   "support": int(support[j]), "threshold": float(thresholds[j])}
                            for j, name in enumerate(label_names)}
    report = classification_report(gold, predicted, target_names=label_names, digits=4, zero_division=0)
    report += "\nthresholds: " + ", ".join(f"{n} {t:.2f}" for n, t in zip(label_names, thresholds)) + "\n"
    confusion = multilabel_confusion_matrix(gold, predicted).tolist()
    errors = []
    if texts is not None and top_errors:
        # How sure the most confident wrong decision of a row was: p for a label wrongly on, 1 - p wrongly off.
        wrongness = np.where(predicted != gold, np.where(predicted == 1, probabilities, 1 - probabilities), 0).max(1)
        wrong = np.flatnonzero((predicted != gold).any(axis=1))
        for index in wrong[np.argsort(-wrongness[wrong], kind="stable")][:top_errors]:
            errors.append({
                "row_id": int(row_ids[index]) if row_ids is not None else int(index), "text": texts[index],
                "label": ", ".join(n for n, g in zip(label_names, gold[index]) if g) or "(none)",
                "predicted": ", ".join(n for n, p in zip(label_names, predicted[index]) if p) or "(none)",
                "confidence": float(wrongness[index]),
                "probabilities": {n: float(p) for n, p in zip(label_names, probabilities[index])},
            })
    return Evaluation(metrics=metrics, report=report, confusion=confusion, errors=errors)


def evaluate_regression(scores: np.ndarray, gold: np.ndarray, texts: Optional[list[str]] = None,
                        row_ids: Optional[list[int]] = None, top_errors: int = 20) -> Evaluation:
    """Score predicted ``scores`` [n] (or [n, 1]) against gold scores [n]; ``errors`` are the largest absolute
    errors (their ``confidence`` is that error). Correlations of a constant prediction are 0, not NaN.

    Example:
        >>> evaluate_regression(np.array([1.0, 2.0, 3.5]), np.array([1.0, 2.0, 3.0])).metrics["mae"]
        0.16666666666666666
    """
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    scores, gold = np.asarray(scores, np.float64).reshape(-1), np.asarray(gold, np.float64).reshape(-1)
    varied = len(gold) > 1 and np.ptp(scores) > 0 and np.ptp(gold) > 0
    mse = float(mean_squared_error(gold, scores))
    metrics = {
        "n": int(len(gold)), "loss": mse, "mse": mse, "rmse": float(np.sqrt(mse)),
        "mae": float(mean_absolute_error(gold, scores)),
        "r2": float(r2_score(gold, scores)) if len(gold) > 1 else 0.0,
        "pearson": float(pearsonr(gold, scores)[0]) if varied else 0.0,
        "spearman": float(spearmanr(gold, scores)[0]) if varied else 0.0,
    }
    report = "".join(f"{key:>9} {metrics[key]:.4f}\n" for key in ("mse", "rmse", "mae", "r2", "pearson", "spearman"))
    errors = []
    if texts is not None and top_errors:
        for index in np.argsort(-np.abs(scores - gold), kind="stable")[:top_errors]:
            errors.append({"row_id": int(row_ids[index]) if row_ids is not None else int(index), "text": texts[index],
                           "label": f"{gold[index]:.4g}", "predicted": f"{scores[index]:.4g}",
                           "confidence": float(abs(scores[index] - gold[index]))})
    return Evaluation(metrics=metrics, report=report, confusion=[], errors=errors)


def evaluate_task(task: str, outputs: np.ndarray, gold: np.ndarray, label_names: list[str],
                  thresholds: Optional[Sequence[float]] = None, **details) -> Evaluation:
    """The evaluation of ``task``'s outputs (probabilities or scores); ``details``: texts, row_ids, top_errors."""
    from tfbert.evaluation import evaluate_predictions

    if task == "multi_label":
        return evaluate_multi_label(outputs, gold, label_names, thresholds, **details)
    if task == "regression":
        return evaluate_regression(outputs, gold, **details)
    return evaluate_predictions(outputs, gold, label_names, **details)


def prediction_rows(task: str, outputs: np.ndarray, gold: np.ndarray, label_names: list[str], row_ids,
                    thresholds: Optional[Sequence[float]] = None) -> list[dict]:
    """predictions_<split>.jsonl rows: class ids and probabilities (single-label), label sets and probabilities
    (multi-label) or scores (regression)."""
    if task == "single_label":
        from tfbert.evaluation import prediction_rows as single_label_rows

        return single_label_rows(outputs, gold, label_names, row_ids)
    if task == "regression":
        return [{"row_id": int(row), "label": float(g), "predicted": round(float(np.ravel(s)[0]), 6)}
                for row, g, s in zip(row_ids, np.ravel(gold), outputs)]
    on = decide(outputs, thresholds)
    return [{"row_id": int(row), "label": [n for n, x in zip(label_names, g) if x > 0],
             "predicted": [n for n, x in zip(label_names, hit) if x],
             "probabilities": [round(float(x), 6) for x in p]}
            for row, g, hit, p in zip(row_ids, gold, on, outputs)]


def validation_evaluation(task: str, outputs: np.ndarray, gold: np.ndarray, label_names: list[str],
                          threshold: str = "auto", **details) -> Evaluation:
    """The validation split's evaluation; for multi-label, first the thresholds (--threshold: auto tunes them
    here, by each label's F1), recorded in its metrics as ``thresholds`` {label: value}."""
    from tfbert.tasks import tune_thresholds

    thresholds = tune_thresholds(outputs, gold, threshold) if task == "multi_label" else None
    evaluation = evaluate_task(task, outputs, gold, label_names, thresholds, **details)
    if thresholds is not None:
        evaluation.metrics["thresholds"] = dict(zip(label_names, thresholds))
    return evaluation


def evaluate_split(task: str, outputs: np.ndarray, gold: np.ndarray, label_names: list[str], row_ids,
                   threshold: str = "auto", validation: Optional[Evaluation] = None, **details):
    """(Evaluation, predictions rows) of one split: the validation split (``validation`` None) sets the
    multi-label thresholds, which a later split's evaluation (given ``validation``) uses as they are."""
    from tfbert.tasks import thresholds_of

    if validation is None:
        evaluation = validation_evaluation(task, outputs, gold, label_names, threshold, row_ids=row_ids, **details)
    else:
        evaluation = evaluate_task(task, outputs, gold, label_names, thresholds_of(validation.metrics, label_names),
                                   row_ids=row_ids, **details)
    thresholds = thresholds_of((validation or evaluation).metrics, label_names)
    return evaluation, prediction_rows(task, outputs, gold, label_names, row_ids, thresholds)


def multi_label_baseline(splits, label_names: list[str], *, seed: int, threshold: str = "auto") -> dict:
    """The TF-IDF baseline of :mod:`tfbert.baseline` for multi-label data: one logistic regression per label
    (one-vs-rest), thresholds set on validation as the model's; the metrics of :func:`evaluate_multi_label`."""
    import time

    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline

    from tfbert.baseline import BaselineSettings, _column, _documents, choose_analyzer
    from tfbert.tasks import tune_thresholds

    started, settings = time.perf_counter(), BaselineSettings()
    train = splits["train"]
    kind, ngrams = choose_analyzer(list(_column(train, "text")), settings)

    def documents(split):
        return _documents(list(_column(split, "text")), _column(split, "text_pair"), settings.max_chars)

    pipeline = make_pipeline(
        TfidfVectorizer(analyzer=kind, ngram_range=ngrams, sublinear_tf=True, max_features=settings.max_features,
                        min_df=settings.min_df if len(train) >= 10 * settings.min_df else 1, dtype=np.float32),
        OneVsRestClassifier(LogisticRegression(C=settings.C, max_iter=settings.max_iter, random_state=seed)))
    pipeline.fit(documents(train), np.asarray(_column(train, "label")) > 0)
    result: dict = {"analyzer": f"{kind} {ngrams[0]}-{ngrams[1]}, one-vs-rest", "train_examples": len(train)}
    thresholds = None
    for name in ("validation", "test"):
        probabilities = pipeline.predict_proba(documents(splits[name]))
        gold = np.asarray(_column(splits[name], "label"))
        thresholds = thresholds or tune_thresholds(probabilities, gold, threshold)
        result[name] = evaluate_multi_label(probabilities, gold, label_names, thresholds).metrics
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def task_baseline(corpus, settings) -> dict:
    """The TF-IDF baseline of a run's ``corpus`` (its task's kind) under TrainingConfig ``settings``."""
    from tfbert.baseline import baseline_metrics

    if corpus.task == "multi_label":
        return multi_label_baseline(corpus.splits, corpus.label_names, seed=settings.seed, threshold=settings.threshold)
    return baseline_metrics(corpus.splits, corpus.label_names, seed=settings.seed)


class ValidationPasses:
    """Each epoch's validation metrics (:func:`tfbert.evaluation.split_metrics` for any task; multi-label ones at
    thresholds set on this split by --threshold, as the run's final evaluation sets them), keeping each pass's
    outputs: the final evaluation of the best epoch's weights reuses that epoch's instead of predicting again.

    Example:
        >>> passes = ValidationPasses(model, encoded["validation"], tokenizer, ["neg", "pos"])  # doctest: +SKIP
        >>> passes()["macro_f1"], passes.outputs_of(epoch=1, epochs_run=1).shape  # doctest: +SKIP
        (0.91, (120, 2))
    """

    def __init__(self, model, split, tokenizer, label_names: list[str], batch_size: int = 64,
                 task: str = "single_label", threshold: str = "auto", window_pool: str = "mean"):
        self.model, self.split, self.tokenizer, self.label_names = model, split, tokenizer, label_names
        self.batch_size, self.task, self.threshold, self.window_pool = batch_size, task, threshold, window_pool
        self.outputs: list[np.ndarray] = []  # one per pass of this process, in epoch order

    def __call__(self) -> dict:
        from tfbert.evaluation import predict_probabilities

        outputs = predict_probabilities(self.model, self.split, self.tokenizer, self.batch_size, self.task,
                                        self.window_pool)
        self.outputs.append(outputs)
        return validation_evaluation(self.task, outputs, np.asarray(self.split["label"]), self.label_names,
                                     self.threshold).metrics

    def warm_up(self) -> None:
        """Predict this split's first batch and drop the outputs: the first pass's one-time work (tracing and
        optimising the prediction function, compiling kernels for a batch shape) done ahead, as fit's steps run."""
        from tfbert.evaluation import predict_probabilities

        first = self.split.select(range(min(self.batch_size, len(self.split))))
        predict_probabilities(self.model, first, self.tokenizer, self.batch_size, self.task, self.window_pool)

    def outputs_of(self, epoch: int, epochs_run: int) -> Optional[np.ndarray]:
        """The outputs of the 1-based ``epoch`` of a fit that ran ``epochs_run`` epochs, if this process validated
        it (a resumed run's epochs before the backup were validated by the process that ran them); else None."""
        index = len(self.outputs) - 1 - (epochs_run - epoch)
        return self.outputs[index] if 0 <= index < len(self.outputs) else None
