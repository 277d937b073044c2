"""The SavedModel export of a Keras 3 (keras-hub) classifier: the same folder, signatures and outputs as
tfbert.export writes for transformers' classes, with one copy of the weights.

Keras' own ``model.export()`` / ``ExportArchive`` stores every weight twice (keras issue 23553: a MiniLM
export of 175 MB for 22.7 M parameters) and keras-hub's preprocessors use tokenizer ops stock TF Serving may
lack. Here tfbert.export.export_saved_model writes it: its model_forward traces a Keras 3 model's call in a
``tf.function`` (tfbert.keras_serving.trace_forward, with the serving forms of its layers) and freezes its
weights into the graph as constants, as for transformers' models, then writes the signatures around it with
tfbert's in-graph tokenisation, warm-up requests and metadata.

Example:
    >>> model = tfbert.keras_backend.load("output/run/model")  # doctest: +SKIP
    >>> export_saved_model_keras(model, tokenizer, id2label={0: "neg", 1: "pos"}, max_length=128,
    ...                          base_dir="output/run/saved_model")  # doctest: +SKIP
    PosixPath('output/run/saved_model/1')
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from tfbert import export
from tfbert.errors import TfbertError
from tfbert.keras_serving import model_input_names, serving_rewrites
from tfbert.model_settings import ModelSettings


def is_keras3_folder(folder: str | Path) -> bool:
    """Whether ``folder`` holds a Keras 3 classifier (tfbert.keras_backend.save: keras_classifier.json beside
    config.json) rather than save_pretrained's files.

    Example:
        >>> is_keras3_folder("output/.../model")  # doctest: +SKIP
        True
    """
    from tfbert.keras_backend import SETTINGS_FILE as KERAS_SETTINGS

    return (Path(folder) / KERAS_SETTINGS).is_file() and (Path(folder) / "config.json").is_file()


class KerasClassifierView:
    """A Keras 3 classifier as tfbert's predictors and evaluation use transformers' models: ``config.id2label``,
    ``config.num_labels`` and ``predict(batches) -> {"logits": ...}`` on tfbert's tf.data batches.

    Example:
        >>> KerasClassifierView(keras_backend.load("run/model")).config.id2label  # doctest: +SKIP
        {0: 'neg', 1: 'pos'}
    """

    def __init__(self, model):
        from types import SimpleNamespace

        self.keras_model = model
        labels = json.loads(model.tfbert_settings)["label_names"]
        self.config = SimpleNamespace(id2label=dict(enumerate(labels)), num_labels=len(labels))

    def predict(self, batches, verbose: int = 0) -> dict:
        import tensorflow as tf

        names = model_input_names(self.keras_model)

        def inputs(features):  # the model's inputs only, as int32 (token types 0 where the batches have none)
            return {name: tf.cast(features[name] if name in features else tf.zeros_like(features["input_ids"]),
                                  tf.int32) for name in names}

        return {"logits": self.keras_model.predict(batches.map(inputs), verbose=verbose)}


def load_model_folder(folder: str | Path):
    """The classifier of a model folder for prediction: transformers' (tfbert.modeling.load_classifier), or a
    :class:`KerasClassifierView` of a Keras 3 one.

    Example:
        >>> load_model_folder("output/.../model").config.id2label  # doctest: +SKIP
        {0: 'neg', 1: 'pos'}
    """
    if is_keras3_folder(folder):
        from tfbert import keras_backend

        return KerasClassifierView(keras_backend.load(folder))
    from tfbert import modeling

    return modeling.load_classifier(Path(folder))


def keras_probabilities(model, encoded: dict, tokenizer, batch_size: int = 64):
    """Float32 probabilities of the Keras 3 classifier for tokenised examples (``encoded``: lists of ids per
    column, as tfbert.data.pipeline.encode_batch returns, or a tokenised split), in length-sorted padded batches, in input order.

    Example:
        >>> keras_probabilities(model, encode_batch(tokenizer, ["great"], None, 128, "head"), tokenizer)  # doctest: +SKIP
        array([[0.1, 0.9]], dtype=float32)
    """
    import numpy as np
    import tensorflow as tf

    names = model_input_names(model)
    columns = encoded.column_names if hasattr(encoded, "column_names") else list(encoded)  # a Dataset or a dict
    all_ids = list(encoded["input_ids"])
    all_types = list(encoded["token_type_ids"]) if "token_type_ids" in columns else None
    rows = len(all_ids)
    order = np.argsort([len(ids) for ids in all_ids], kind="stable")
    probabilities = np.zeros((rows, len(json.loads(model.tfbert_settings)["label_names"])), np.float32)
    pad_id = tokenizer.pad_token_id or 0
    for start in range(0, rows, batch_size):
        batch = order[start:start + batch_size]
        lengths = [len(all_ids[i]) for i in batch]
        ids = np.full((len(batch), max(lengths)), pad_id, np.int32)
        types = np.zeros_like(ids)
        for row, (i, length) in enumerate(zip(batch, lengths)):
            ids[row, :length] = all_ids[i]
            if all_types is not None:
                types[row, :length] = all_types[i]
        mask = (np.arange(ids.shape[1])[None, :] < np.array(lengths)[:, None]).astype(np.int32)
        given = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        inputs = {name: given[name] for name in names}
        logits = model(inputs, training=False)
        probabilities[batch] = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1).numpy()
    return probabilities


def export_saved_model_keras(model, tokenizer, *, id2label: dict[int, str], max_length: int, base_dir: str | Path,
                             truncation: str = "head", weights_in_graph: bool = True, text_pairs: bool = True) -> Path:
    """Write the next numbered SavedModel version of a Keras 3 classifier under ``base_dir``; return its folder.

    The same contract as tfbert.export.export_saved_model: serving_default(text), predict_text_pair(text,
    text_pair; with ``text_pairs``) and predict_ids(input_ids, attention_mask, token_type_ids), each returning
    probabilities, label_id, label and label_names; TF Serving's layout and warm-up requests; metadata in
    assets.extra.

    Args:
        model: a classifier from tfbert.keras_backend.build_classifier or load.
        tokenizer: the Hugging Face tokenizer it was trained with (tfbert tokenises, never keras-hub).
        id2label: label names by class index.
        max_length: tokens per text including the special tokens, as in training.
        base_dir: the model base path TF Serving is pointed at (``.../saved_model``).
        truncation: head, tail or head_tail, as in training.
        weights_in_graph: weights as graph constants (the default), else as variables (one copy either way).

    Example:
        >>> export_saved_model_keras(model, tokenizer, id2label={0: "neg", 1: "pos"}, max_length=128,
        ...                          base_dir="output/run/saved_model")  # doctest: +SKIP
        PosixPath('output/run/saved_model/1')
    """
    config = json.loads(getattr(model, "tfbert_config", "{}"))
    positions = config.get("max_position_embeddings")
    if config.get("model_type") in ("roberta", "xlm-roberta") and isinstance(positions, int):
        positions -= 2  # RoBERTa's positions start after the padding id
    if isinstance(positions, int) and max_length > positions:
        raise TfbertError(f"--max_length {max_length}: the model has only {positions} positions; "
                          f"use --max_length {positions} or less")
    return export.export_saved_model(model, tokenizer, id2label=id2label, max_length=max_length, base_dir=base_dir,
                                     truncation=truncation, weights_in_graph=weights_in_graph, text_pairs=text_pairs)


def export_tflite_keras(model, tokenizer, settings: ModelSettings, folder: str | Path, *,
                        left_out_layers: Sequence[int] = ()) -> Path:
    """The compact export (tfbert.export_tflite: int8 weights, builtin ops) of a float32 Keras 3 classifier,
    traced with tfbert.keras_serving's rewrites (2-D projections become int8 FULLY_CONNECTED kernels) and
    without the encoder layers ``left_out_layers`` (tfbert.layer_drop's search), which the file then lacks.

    Example:
        >>> export_tflite_keras(model, tokenizer, ModelSettings(labels=["neg", "pos"], max_length=128),
        ...                     "output/run/compact")  # doctest: +SKIP
        PosixPath('output/run/compact')
    """
    import tensorflow as tf

    from tfbert.export_tflite import export_tflite

    names = model_input_names(model)
    spec = tf.TensorSpec([None, None], tf.int32)

    @tf.function(input_signature=[spec, spec, spec])
    def forward(input_ids, attention_mask, token_type_ids):
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        return tf.cast(model({name: given[name] for name in names}, training=False), tf.float32)

    with serving_rewrites(model, left_out=left_out_layers):
        traced = forward.get_concrete_function()
    # The converter freezes the tf.Variables it is handed. The Keras 3 model's own variables are Keras variables,
    # which it kept as resource variables that dynamic-range quantisation leaves in float32; freezing them into
    # graph constants first cost ~2.8 GiB of memory in the conversion (MiniLM). Handed the tf.Variables they wrap,
    # it writes the same file (ops, int8 weights, outputs) with ~0.4 GiB.
    variables = [weight.value for weight in model.weights]

    def keras_logits(inputs):
        token_types = inputs.get("token_type_ids", tf.zeros_like(inputs["input_ids"]))
        return tf.nest.flatten(traced(inputs["input_ids"], inputs["attention_mask"], token_types))[0]

    return export_tflite(model, tokenizer, settings, folder, left_out_layers=left_out_layers, logits=keras_logits,
                         variables=variables)
