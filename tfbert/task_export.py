"""SavedModel outputs of multi-label and regression models; every signature (text, text pair, ids) has them.

    multi_label  probabilities float32 [batch, labels] (sigmoid), label_mask bool [batch, labels] (probability
                 >= the label's threshold), label string [batch] (the labels on, joined by ","), label_names
                 string [batch, labels], thresholds float32 [batch, labels] (tuned on validation, saved here)
    regression   score float32 [batch]

Example:
    >>> module_class = task_module_class(base_class, "multi_label", [0.4, 0.6])  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Optional, Sequence

LABEL_JOIN = ","
OUTPUTS = {
    "multi_label": {
        "probabilities": "float32 [batch, labels]: a sigmoid per label, in float32",
        "label_mask": "bool [batch, labels]: whether each label's probability reaches its threshold",
        "label": "string [batch]: the labels predicted, joined by ',' ('' for none)",
        "label_names": "string [batch, labels]: the label of each probability column (same in every row)",
        "thresholds": "float32 [batch, labels]: each label's decision threshold (same in every row)",
    },
    "regression": {"score": "float32 [batch]: the predicted score"},
}


def task_outputs(task: str, logits, labels, thresholds):
    """The signature outputs of ``task`` for float32 ``logits`` [batch, outputs] (TF ops; ``labels``: string
    tensor [labels], ``thresholds``: float32 tensor [labels])."""
    import tensorflow as tf

    if task == "regression":
        return {"score": logits[:, 0]}
    probabilities = tf.sigmoid(logits)
    mask = probabilities >= thresholds[tf.newaxis, :]
    rows = tf.shape(logits)[0]
    chosen = tf.ragged.boolean_mask(tf.tile(labels[tf.newaxis, :], [rows, 1]), mask)
    return {"probabilities": probabilities, "label_mask": mask,
            "label": tf.strings.reduce_join(chosen, axis=-1, separator=LABEL_JOIN),
            "label_names": tf.tile(labels[tf.newaxis, :], [rows, 1]),
            "thresholds": tf.tile(thresholds[tf.newaxis, :], [rows, 1])}


def task_module_class(base, task: str, thresholds: Optional[Sequence[float]]):
    """``base`` (export's TextClassifier module) with the outputs of ``task`` in place of the softmax ones; the
    base class itself for single-label models."""
    import tensorflow as tf

    if task == "single_label":
        return base

    class TaskClassifier(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.thresholds = tf.constant(list(thresholds or [0.5] * int(self.labels.shape[0])), tf.float32)

        def outputs(self, logits):
            return task_outputs(task, tf.cast(logits, tf.float32), self.labels, self.thresholds)

    return TaskClassifier


def describe(described: dict, task: str) -> dict:
    """metadata.json's signature descriptions with ``task``'s outputs."""
    if task == "single_label":
        return described
    return {name: {**signature, "outputs": OUTPUTS[task]} for name, signature in described.items()}


def outputs_array(task: str, outputs: dict):
    """The predictor's array from a signature's outputs: probabilities [n, labels], or scores as [n, 1]."""
    if task == "regression":
        return outputs["score"].numpy().reshape(-1, 1)
    return outputs["probabilities"].numpy()


def served_task(answer: dict) -> str:
    """The task of a model from one row of its server's answer: a score, a label mask, or neither."""
    return "regression" if "score" in answer else "multi_label" if "label_mask" in answer else "single_label"
