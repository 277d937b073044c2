"""What differs between the tasks a run can train: single-label, multi-label and regression.

    single_label   softmax over the labels, sparse cross-entropy, best epoch by validation macro-F1
    multi_label    a sigmoid per label, binary cross-entropy, a decision threshold per label (tuned on
                   validation F1 or given), best epoch by validation macro-F1
    regression     one output, the score itself, mean squared error, best epoch by validation Pearson r

Example:
    >>> import numpy as np
    >>> activate("multi_label", np.array([[0.0, 2.0]])).round(3).tolist()
    [[0.5, 0.881]]
    >>> monitor("regression")
    'val_pearson'
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from tfbert.errors import TfbertError

TASK_NAMES = ("single_label", "multi_label", "regression")
THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)  # candidates of --threshold auto


def threshold_problem(text: str) -> str:
    """Why ``--threshold`` is not valid ('' when it is: auto, or a number strictly between 0 and 1).

    Example:
        >>> threshold_problem("0.4"), threshold_problem("1.5") != ""
        ('', True)
    """
    if text == "auto":
        return ""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    return "" if 0 < value < 1 else f"--threshold {text}: give auto or a number between 0 and 1, e.g. 0.5"


def check_settings(config, task: str) -> None:
    """Refuse, in one line, the settings the task the data resolved to cannot honour (``config``: TrainConfig)."""
    if config.training.class_weight and task != "single_label":
        raise TfbertError(f"--class_weight: the data is {task}, which has no classes to weigh; drop the flag")


def loss(task: str):
    """The per-example training loss of ``task`` on float32 logits: a function (labels, logits) -> [batch]."""
    import tensorflow as tf

    if task == "single_label":
        from tfbert.training import classification_loss

        return classification_loss

    def multi_label_loss(labels, logits):
        labels = tf.cast(labels, tf.float32)
        return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels, tf.cast(logits, tf.float32)), axis=-1)

    def regression_loss(labels, logits):
        labels = tf.reshape(tf.cast(labels, tf.float32), tf.shape(logits))
        return tf.reduce_mean(tf.square(tf.cast(logits, tf.float32) - labels), axis=-1)

    return multi_label_loss if task == "multi_label" else regression_loss


def keras_metrics(task: str) -> list:
    """What Keras shows in the progress bar while training (validation metrics come from a prediction pass)."""
    import tensorflow as tf

    if task == "single_label":  # an object, not "accuracy": Keras would create its variables in the first step
        return [tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    if task == "multi_label":  # a logit of 0 is a probability of 0.5
        return [tf.keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0)]
    return [tf.keras.metrics.MeanAbsoluteError(name="mae")]


def monitor(task: str) -> str:
    """The validation key choosing the best epoch (and early stopping)."""
    return "val_pearson" if task == "regression" else "val_macro_f1"


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64, in numpy: scipy.special would cost the compact export's one-text
    process a second of import."""
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def activate(task: str, logits: np.ndarray) -> np.ndarray:
    """Logits [n, outputs] as the task's outputs: softmax probabilities, sigmoid probabilities, or scores."""
    logits = np.asarray(logits, np.float64)
    if task == "multi_label":
        return (0.5 * (1 + np.tanh(0.5 * logits))).astype(np.float32)  # the sigmoid, without exp's overflow
    if task == "regression":
        return logits.astype(np.float32)
    return np.exp(log_softmax(logits)).astype(np.float32)


def decide(probabilities: np.ndarray, thresholds) -> np.ndarray:
    """Multi-label decisions: [n, labels] booleans, a label on where its probability reaches its threshold.

    Example:
        >>> decide(np.array([[0.6, 0.3]]), [0.5, 0.25]).tolist()
        [[True, True]]
    """
    return np.asarray(probabilities) >= np.asarray(thresholds, np.float32)[np.newaxis, :]


def tune_thresholds(probabilities: np.ndarray, gold: np.ndarray, setting: str = "auto") -> list[float]:
    """One threshold per label: the given number for every label, or (auto) the grid value 0.05..0.95 with the
    best F1 of that label on these (validation) examples; ties go to the value nearest 0.5, and a label with no
    positive example keeps 0.5.

    Example:
        >>> tune_thresholds(np.array([[0.3], [0.2], [0.1]]), np.array([[1], [1], [0]]))
        [0.2]
    """
    from sklearn.metrics import f1_score

    labels = np.asarray(gold).shape[1]
    if setting != "auto":
        return [float(setting)] * labels
    chosen = []
    for j in range(labels):
        truth = np.asarray(gold)[:, j] > 0
        if not truth.any():
            chosen.append(0.5)
            continue
        scores = [f1_score(truth, probabilities[:, j] >= t, zero_division=0) for t in THRESHOLD_GRID]
        best = max(scores)
        candidates = [t for t, s in zip(THRESHOLD_GRID, scores) if s == best]
        chosen.append(float(min(candidates, key=lambda t: (abs(t - 0.5), t))))
    return chosen


def thresholds_of(metrics: dict, labels: list[str]) -> Optional[list[float]]:
    """The per-label thresholds recorded in a split's metrics (``{"thresholds": {label: value}}``), in label order."""
    recorded = metrics.get("thresholds")
    return [float(recorded[name]) for name in labels] if recorded else None


def summary_scores(task: str, validation: dict, test: dict) -> dict:
    """The headline numbers of a run's printed summary."""
    if task == "regression":
        return {"validation_pearson": validation["pearson"], "test_pearson": test["pearson"], "test_mse": test["mse"]}
    scores = {"validation_macro_f1": validation["macro_f1"], "test_macro_f1": test["macro_f1"]}
    if task == "multi_label":
        return {**scores, "test_micro_f1": test["micro_f1"], "test_subset_accuracy": test["subset_accuracy"]}
    return {**scores, "test_accuracy": test["accuracy"]}


def require(task: str, allowed: tuple[str, ...], what: str) -> None:
    """Refuse ``what`` in one line for a model of a task it does not handle."""
    if task not in allowed:
        raise TfbertError(f"{what} handles {' and '.join(allowed)} models; this one is {task}")


def answer(task: str, labels: list[str], thresholds, row: np.ndarray) -> dict:
    """infer.py's answer for one text of a multi-label model (the label set, each with its probability, most
    probable first, and every probability) or a regression model (the score).

    Example:
        >>> answer("multi_label", ["a", "b"], [0.5, 0.5], np.array([0.9, 0.2]))["labels"]
        [{'label': 'a', 'probability': 0.9}]
    """
    if task == "regression":
        return {"score": round(float(row[0]), 6)}
    on = decide(row[np.newaxis, :], thresholds if thresholds is not None else [0.5] * len(labels))[0]
    order = np.argsort(-row, kind="stable")
    return {"labels": [{"label": labels[j], "probability": round(float(row[j]), 6)} for j in order if on[j]],
            "probabilities": {labels[j]: round(float(row[j]), 6) for j in order}}


def answer_text(result: dict) -> str:
    """The one-line form of :func:`answer`: "score 3.412", or "sport 0.912  tech 0.634" ("(no label)" if none)."""
    if "score" in result:
        return f"score {result['score']:.3f}"
    return "  ".join(f"{item['label']} {item['probability']:.3f}" for item in result["labels"]) or "(no label)"


def start_head(model, task: str, train_targets: np.ndarray) -> None:
    """Start the output bias at the training data's answer when nothing is known: the mean score (regression),
    each label's prior log-odds (multi-label). A fresh head outputs ~0, and AdamW moves a bias by about the
    learning rate per step: a mean star rating of 4 would take ~80,000 steps at 5e-5 to reach."""
    if task == "single_label":
        return
    targets = np.asarray(train_targets, np.float64).reshape(len(train_targets), -1)
    if task == "regression":
        start = targets.mean(axis=0)
    else:
        prior = np.clip(targets.mean(axis=0), 1e-3, 1 - 1e-3)
        start = np.log(prior / (1 - prior))
    biases = [v for v in model.trainable_variables if "bias" in v.name and tuple(v.shape) == (len(start),)]
    if biases:  # the output layer's bias is the last of its size
        biases[-1].assign(start.astype(biases[-1].dtype.as_numpy_dtype))
