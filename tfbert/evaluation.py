"""Predictions to metrics: accuracy, macro/weighted precision-recall-F1, report, confusion matrix, errors.

Example:
    >>> import numpy as np
    >>> result = evaluate_predictions(np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 0]), ["ham", "spam"])
    >>> round(result.metrics["accuracy"], 2)
    0.5
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from tfbert import runs


@dataclass
class Evaluation:
    """Scores of one split, and what is needed to explain them."""

    metrics: dict
    report: str
    confusion: list[list[int]]
    errors: list[dict] = field(default_factory=list)


def _clipped(probabilities: np.ndarray) -> np.ndarray:
    """Probabilities kept off 0 (log loss stays finite) and rows re-normalised to sum to 1."""
    clipped = np.clip(probabilities.astype(np.float64), 1e-7, 1.0)
    return clipped / clipped.sum(axis=1, keepdims=True)


def evaluate_predictions(
    probabilities: np.ndarray,
    labels: np.ndarray,
    label_names: list[str],
    texts: Optional[list[str]] = None,
    row_ids: Optional[list[int]] = None,
    top_errors: int = 20,
) -> Evaluation:
    """Score predicted class probabilities against gold label ids.

    Args:
        probabilities: [n, classes] rows summing to 1.
        labels: [n] gold class ids.
        label_names: class names, index = id.
        texts, row_ids: for listing the most confident wrong predictions.
        top_errors: how many of those to keep.
    """
    from sklearn.metrics import (
        accuracy_score,
        classification_report,
        confusion_matrix,
        log_loss,
        precision_recall_fscore_support,
    )

    labels = np.asarray(labels)
    predicted = probabilities.argmax(axis=1)
    classes = list(range(len(label_names)))
    metrics = {
        "n": int(len(labels)),
        "loss": float(log_loss(labels, _clipped(probabilities), labels=classes)),
        "accuracy": float(accuracy_score(labels, predicted)),
    }
    for average in ("macro", "weighted"):
        precision, recall, f1, _ = precision_recall_fscore_support(
            labels, predicted, labels=classes, average=average, zero_division=0
        )
        metrics.update(
            {f"{average}_precision": float(precision), f"{average}_recall": float(recall), f"{average}_f1": float(f1)}
        )
    report = classification_report(
        labels, predicted, labels=classes, target_names=label_names, digits=4, zero_division=0
    )
    confusion = confusion_matrix(labels, predicted, labels=classes).tolist()
    errors = []
    if texts is not None and top_errors:
        wrong = np.flatnonzero(predicted != labels)
        confidence = probabilities[wrong, predicted[wrong]]
        for index in wrong[np.argsort(-confidence, kind="stable")][:top_errors]:
            errors.append(
                {
                    "row_id": int(row_ids[index]) if row_ids is not None else int(index),
                    "text": texts[index],
                    "label": label_names[labels[index]],
                    "predicted": label_names[predicted[index]],
                    "confidence": float(probabilities[index, predicted[index]]),
                    "probabilities": {name: float(p) for name, p in zip(label_names, probabilities[index])},
                }
            )
    return Evaluation(metrics=metrics, report=report, confusion=confusion, errors=errors)


def predict_probabilities(model, encoded, tokenizer, batch_size: int = 64, task: str = "single_label",
                          window_pool: str = "mean") -> np.ndarray:
    """Class probabilities (float32) for every example of a tokenised split, in the split's order (a multi-label
    model's sigmoid probabilities, a regression model's [n, 1] scores: tfbert.tasks.activate).

    A windowed split (``--long_text window``) gets one answer per text, pooled from its windows' (``window_pool``).
    """
    import datasets
    import tensorflow as tf

    from tfbert import windows
    from tfbert.data.pipeline import inference_dataset, prediction_order

    document = None
    if windows.is_windowed(encoded):
        n_documents = len(encoded)
        rows, document = windows.window_rows(encoded)
        encoded = datasets.Dataset.from_dict(rows)
    order = prediction_order(encoded)
    batches = inference_dataset(encoded, tokenizer, batch_size, order=order)
    outputs = model.predict(batches, verbose=0)
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs  # transformers' output dict; Keras 3's array
    if document is not None:
        in_order = np.empty(logits.shape, np.float32)
        in_order[order] = logits
        return windows.pooled_outputs(task, in_order, document, n_documents, window_pool)
    if task == "single_label":
        sorted_probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1).numpy()
    else:
        from tfbert.tasks import activate

        sorted_probabilities = activate(task, logits)
    probabilities = np.empty_like(sorted_probabilities)
    probabilities[order] = sorted_probabilities
    return probabilities


def split_metrics(model, split, tokenizer, label_names: list[str], batch_size: int = 64,
                  window_pool: str = "mean") -> dict:
    """Metrics of ``model`` on one tokenised split with a ``label`` column: the training model's validation
    each epoch.

    Example:
        >>> split_metrics(model, encoded["validation"], tokenizer, ["neg", "pos"])["macro_f1"]  # doctest: +SKIP
        0.91
    """
    probabilities = predict_probabilities(model, split, tokenizer, batch_size, window_pool=window_pool)
    return evaluate_predictions(probabilities, np.asarray(split["label"]), label_names).metrics


def prediction_rows(probabilities: np.ndarray, gold: np.ndarray, label_names: list[str], row_ids) -> list[dict]:
    """One predictions_<split>.jsonl row per example: its row id, gold and predicted label, and probabilities.

    ``label_names`` may name more labels than ``probabilities`` has columns (gold labels the model lacks).

    Example:
        >>> prediction_rows(np.array([[0.2, 0.8]]), np.array([0]), ["ham", "spam"], [7])[0]["predicted"]
        'spam'
    """
    return [{"row_id": int(row), "label": label_names[label], "predicted": label_names[int(p.argmax())],
             "probabilities": [round(float(x), 6) for x in p]}
            for row, label, p in zip(row_ids, gold, probabilities)]


def write_evaluation_files(folder: Path, evaluations: dict[str, Evaluation], predictions: dict[str, list[dict]],
                           errors_of: str = "test") -> None:
    """What a run and evaluate.py write beside their metrics: predictions_<split>.jsonl, the per-class
    classification_report.txt, and errors.jsonl (the most confident errors of the split ``errors_of``).

    Example:
        >>> write_evaluation_files(run.path, {"test": evaluation}, {"test": rows})  # doctest: +SKIP
    """
    folder = Path(folder)
    for split, rows in predictions.items():
        runs.write_jsonl(folder / f"predictions_{split}.jsonl", rows)
    runs.write_text(folder / "classification_report.txt",
                    "".join(f"== {split} ==\n{ev.report}\n" for split, ev in evaluations.items()))
    runs.write_jsonl(folder / "errors.jsonl", evaluations[errors_of].errors)
