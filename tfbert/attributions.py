"""Why the model decided: integrated gradients over the input embeddings, one score per token the model saw.

The path runs from a baseline (the [PAD] embedding at every position, [CLS]/[SEP] and other special tokens kept)
to the input; the attributions of a text sum to logit(target, input) - logit(target, baseline) (completeness),
and each explanation reports how far they are from that sum. It works on token ids, so any tokenizer
(WordPiece, SentencePiece, MeCab + WordPiece) and any transformers TF classifier that accepts ``inputs_embeds``.

Example:
    >>> from tfbert.modeling import load_classifier, load_tokenizer
    >>> model, tokenizer = load_classifier("run/model"), load_tokenizer("run/model")  # doctest: +SKIP
    >>> [e.top_tokens(3) for e in explain(model, tokenizer, ["great phone, awful battery"])]  # doctest: +SKIP
    [[('great', 0.91), ('awful', -0.42), ('phone', 0.07)]]
"""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from tfbert.errors import TfbertError

DEFAULT_STEPS = 48
COMPLETENESS_LIMIT = 0.05  # relative error above which the path integral is redone once with more steps
RETRY_FACTOR = 4
STEP_BATCH = 32  # interpolation points per forward/backward pass: bounds memory for long texts and big models
_COMPILED = weakref.WeakKeyDictionary()  # model -> its compiled gradient step; gone with the model


@dataclass
class Explanation:
    """Token attributions of one text towards ``target`` (a class id).

    ``completeness_error`` is |sum(scores) - (logit(target, input) - logit(target, baseline))| relative to
    that difference: near 0 when the path integral was computed with enough steps.
    """

    tokens: list[str]
    scores: np.ndarray  # one per token, in logit units; positive pushes towards ``target``
    target: int
    completeness_error: float
    logit_change: float  # logit(target, input) - logit(target, baseline)
    steps: int
    special: Optional[list[bool]] = None  # [CLS], [SEP], [PAD]...: kept from the baseline, so scored 0

    def top_tokens(self, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` tokens with the largest |score|, special tokens left out.

        Example:
            >>> Explanation(["[CLS]", "good", "it", "[SEP]"], np.array([0., .8, -.1, 0.]), 1, 0.01, .7, 48,
            ...             [True, False, False, True]).top_tokens(1)
            [('good', 0.8)]
        """
        special = self.special or [False] * len(self.tokens)
        order = [i for i in np.argsort(-np.abs(self.scores), kind="stable") if not special[i]]
        return [(self.tokens[i], round(float(self.scores[i]), 4)) for i in order[:k]]

    def describe(self, k: int = 5) -> str:
        """One line: the top tokens with their scores, and the completeness error.

        Example:
            >>> Explanation(["good", "it"], np.array([.8, -.1]), 1, 0.012, .7, 48).describe(2)
            'good +0.800  it -0.100  (completeness error 1.2%)'
        """
        top = "  ".join(f"{token} {score:+.3f}" for token, score in self.top_tokens(k))
        return f"{top}  (completeness error {self.completeness_error:.1%})"

    def to_dict(self, k: int = 5) -> dict:
        """The top tokens, target and completeness error, for JSON output."""
        return {"target": self.target, "top_tokens": [[token, score] for token, score in self.top_tokens(k)],
                "completeness_error": round(self.completeness_error, 6), "steps": self.steps}


def explain(model, tokenizer, texts: Sequence[str], text_pairs: Optional[Sequence[str]] = None,
            target: Optional[int | Sequence[int]] = None, steps: int = DEFAULT_STEPS,
            max_length: int = 512, truncation: str = "head") -> list[Explanation]:
    """Explain each text's logit of ``target`` (default: the predicted class) by integrated gradients.

    Args:
        model: a transformers TF*ForSequenceClassification (Keras), in float32 for exact gradients.
        tokenizer: its tokenizer; texts are tokenised as for prediction (special tokens, --truncation).
        texts, text_pairs: the inputs, with their second texts for pair models.
        target: one class id for all texts, one per text, or None for each text's predicted class.
        steps: interpolation steps along the path (trapezoid rule); retried once with 4x when the
            completeness error is over 5 %.

    Example:
        >>> explain(model, tokenizer, ["bad phone"], target=0)[0].tokens  # doctest: +SKIP
        ['[CLS]', 'bad', 'phone', '[SEP]']
    """
    from tfbert.data.pipeline import encode_batch

    encoded = encode_batch(tokenizer, list(texts), list(text_pairs) if text_pairs is not None else None, max_length,
                           truncation, count_tokens=False)
    type_ids = encoded.get("token_type_ids")
    targets = list(target) if isinstance(target, (list, tuple, np.ndarray)) else [target] * len(texts)
    return [explain_ids(model, tokenizer, ids, type_ids[i] if type_ids else None, targets[i], steps)
            for i, ids in enumerate(encoded["input_ids"])]


def explain_predictor(predictor, texts: Sequence[str], text_pairs: Optional[Sequence[str]] = None,
                      steps: int = DEFAULT_STEPS) -> list[Explanation]:
    """:func:`explain` with the model, tokenizer and truncation of a Keras predictor (infer.py --explain).

    Example:
        >>> explain_predictor(load_predictor("output/.../run"), ["great phone"])[0].top_tokens(2)  # doctest: +SKIP
        [('great', 1.21), ('phone', 0.08)]
    """
    from tfbert.predictors import KerasPredictor

    if not isinstance(predictor, KerasPredictor):
        raise TfbertError("--explain needs the Keras model: give --model a run folder or its model/ folder "
                          "(not a SavedModel, a compact/ export or --server)")
    if hasattr(predictor.model, "keras_model"):  # tfbert.export_keras.KerasClassifierView
        raise TfbertError("--explain reads transformers' embedding layers: it is not available for a model trained "
                          "with --backend keras yet; predict without --explain")
    return explain(predictor.model, predictor.tokenizer, texts, text_pairs, steps=steps,
                   max_length=predictor.max_length, truncation=predictor.truncation)


def explain_ids(model, tokenizer, input_ids: Sequence[int], token_type_ids: Optional[Sequence[int]] = None,
                target: Optional[int] = None, steps: int = DEFAULT_STEPS) -> Explanation:
    """:func:`explain` for one tokenised example (ids as the model saw them, special tokens included).

    Example:
        >>> explain_ids(model, tokenizer, [2, 17, 3], target=1).scores.shape  # doctest: +SKIP
        (3,)
    """
    special = _special_mask(tokenizer, input_ids)
    inputs, baseline = _embeddings(model, tokenizer, input_ids, special)
    if target is None:
        target = int(np.argmax(_logits(model, inputs[None], token_type_ids)[0]))
    scores, change, error = _integrated_gradients(model, inputs, baseline, token_type_ids, target, steps)
    if error > COMPLETENESS_LIMIT:  # too coarse a path for this input: one finer try
        steps *= RETRY_FACTOR
        scores, change, error = _integrated_gradients(model, inputs, baseline, token_type_ids, target, steps)
    return Explanation(tokens=tokenizer.convert_ids_to_tokens(list(input_ids)), scores=scores, target=int(target),
                       completeness_error=error, logit_change=change, steps=steps, special=special)


def explain_test_examples(model_dir: Path, encoded, predictions_file: Path, n_errors: int = 3, n_correct: int = 3,
                          steps: int = 32) -> list[tuple[str, Explanation]]:
    """Explanations of a run's most confident test errors and of a few correct predictions spread over the split,
    each with a caption; the model is reloaded from ``model_dir`` in float32 (gradients of a mixed-precision copy
    would not add up to the logits).

    Args:
        encoded: the tokenised test split (input_ids, row_id, token_type_ids when the model uses them).
        predictions_file: predictions_test.jsonl of the run (row_id, label, predicted, probabilities).

    Example:
        >>> pairs = explain_test_examples(model_dir, test_split, run_dir / "predictions_test.jsonl")  # doctest: +SKIP
        >>> pairs[0][0]  # doctest: +SKIP
        'error: true neg, predicted pos (0.941)'
    """
    import tensorflow as tf

    from tfbert import modeling
    from tfbert.model_settings import ModelSettings

    records = [json.loads(line) for line in Path(predictions_file).read_text(encoding="utf-8").splitlines() if line]
    errors = sorted((r for r in records if r["label"] != r["predicted"]), key=lambda r: -max(r["probabilities"]))
    correct = [r for r in records if r["label"] == r["predicted"]]
    picked = errors[:n_errors] + correct[::max(1, len(correct) // max(n_correct, 1))][:n_correct]
    if not picked:
        return []
    policy = tf.keras.mixed_precision.global_policy().name
    tf.keras.mixed_precision.set_global_policy("float32")
    try:
        model = modeling.load_classifier(Path(model_dir))
    finally:
        tf.keras.mixed_precision.set_global_policy(policy)
    tokenizer = modeling.load_tokenizer(Path(model_dir), ModelSettings.read(Path(model_dir)).word_tokenizer)
    position = {int(row): i for i, row in enumerate(encoded["row_id"])}
    has_types = "token_type_ids" in encoded.column_names
    explained = []
    for record in picked:
        example = encoded[position[int(record["row_id"])]]
        confidence = max(record["probabilities"])
        caption = (f"error: true {record['label']}, predicted {record['predicted']} ({confidence:.3f})"
                   if record["label"] != record["predicted"] else f"correct: {record['label']} ({confidence:.3f})")
        explained.append((caption, explain_ids(model, tokenizer, example["input_ids"],
                                               example["token_type_ids"] if has_types else None,
                                               target=model.config.label2id[record["predicted"]], steps=steps)))
    return explained


def _special_mask(tokenizer, input_ids: Sequence[int]) -> list[bool]:
    special_ids = set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}  # [UNK] carries the text's meaning
    return [int(token) in special_ids for token in input_ids]


def word_embeddings(model):
    """The [vocabulary, hidden] word-embedding matrix of a transformers TF model (BERT, RoBERTa, ALBERT, ...)."""
    layer = model.get_input_embeddings()
    for name in ("weight", "word_embeddings"):
        if getattr(layer, name, None) is not None:
            return getattr(layer, name)
    raise TypeError(f"{type(model).__name__}: cannot find the word-embedding matrix of {type(layer).__name__}")


def _embeddings(model, tokenizer, input_ids: Sequence[int], special: list[bool]):
    """The input's word embeddings and the baseline's: [PAD] (zeros without one) except at special tokens."""
    import tensorflow as tf

    matrix = word_embeddings(model)
    ids = tf.constant([int(i) for i in input_ids], tf.int32)
    inputs = tf.cast(tf.gather(matrix, ids), tf.float32)
    pad_id = tokenizer.pad_token_id
    filler = (tf.cast(tf.gather(matrix, [pad_id]), tf.float32) if pad_id is not None
              else tf.zeros_like(inputs[:1]))
    baseline = tf.where(tf.constant(special)[:, None], inputs, tf.broadcast_to(filler, tf.shape(inputs)))
    return inputs, baseline


def _logits(model, embeddings, token_type_ids=None):
    """Logits [batch, classes] (float32) of a batch of embedded copies of one example (token types: [length])."""
    import tensorflow as tf

    batch, length = tf.shape(embeddings)[0], tf.shape(embeddings)[1]
    features = {"inputs_embeds": embeddings, "attention_mask": tf.ones((batch, length), tf.int32)}
    if token_type_ids is not None:
        features["token_type_ids"] = tf.tile(tf.reshape(tf.cast(token_type_ids, tf.int32), (1, -1)), [batch, 1])
    return tf.cast(model(features, training=False).logits, tf.float32)  # a dict: Keras wants a first argument


def _gradient_step(model):
    """(points [b, n, hidden], token types [n] or None, target) -> (the target's logits [b], their gradients), as
    one compiled graph per model: eagerly, the Python of a transformers model costs more than its arithmetic."""
    import tensorflow as tf

    if model not in _COMPILED:
        def step(points, token_type_ids, target):
            with tf.GradientTape() as tape:
                tape.watch(points)
                logit = tf.gather(_logits(model, points, token_type_ids), target, axis=1)
            return logit, tape.gradient(logit, points)

        _COMPILED[model] = tf.function(step, reduce_retracing=True)  # texts of new lengths reuse the graph
    return _COMPILED[model]


def _integrated_gradients(model, inputs, baseline, token_type_ids, target: int,
                          steps: int) -> tuple[np.ndarray, float, float]:
    """Per-token attributions (trapezoid rule over ``steps`` intervals), the logit change, the completeness error."""
    import tensorflow as tf

    step = _gradient_step(model)
    types = tf.constant(list(token_type_ids), tf.int32) if token_type_ids is not None else None
    alphas = tf.linspace(0.0, 1.0, steps + 1)
    gradients, target_logits = [], []
    for start in range(0, steps + 1, STEP_BATCH):  # the path's points in batches: one pass per batch
        chunk = alphas[start:start + STEP_BATCH][:, None, None]
        logit, gradient = step(baseline[None] + chunk * (inputs - baseline)[None], types, tf.constant(target))
        gradients.append(gradient)
        target_logits.append(logit)
    gradients, target_logits = tf.concat(gradients, 0), tf.concat(target_logits, 0).numpy()
    mean_gradient = tf.reduce_sum(gradients[:-1] + gradients[1:], axis=0) / (2.0 * steps)
    scores = tf.reduce_sum(mean_gradient * (inputs - baseline), axis=-1).numpy().astype(np.float64)
    change = float(target_logits[-1] - target_logits[0])
    error = abs(float(scores.sum()) - change) / max(abs(change), 1e-6)
    return scores, change, error


def display_tokens(tokens: Sequence[str]) -> list[tuple[str, bool]]:
    """Each token as it reads in text, and whether a space comes before it (WordPiece ``##``, SentencePiece ``▁``).

    Example:
        >>> display_tokens(["[CLS]", "good", "##ly", "[SEP]"])
        [('[CLS]', False), ('good', True), ('ly', False), ('[SEP]', True)]
        >>> display_tokens(["<s>", "▁great", "▁phone", "s", "</s>"])
        [('<s>', False), ('great', True), ('phone', True), ('s', False), ('</s>', False)]
    """
    sentencepiece = any(token.startswith("▁") for token in tokens)  # its words carry their own space marks
    shown = []
    for i, token in enumerate(tokens):
        if token.startswith("##"):
            shown.append((token[2:], False))
        elif token.startswith("▁"):
            shown.append((token[1:], i > 0))
        else:
            shown.append((token, i > 0 and not sentencepiece))
    return shown
