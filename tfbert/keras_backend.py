"""A Keras 3 classifier on a keras-hub backbone: the same inputs, head and numbers as transformers' TF classes.

transformers' TF classes run on Keras 2 (tf_keras); this module builds the same sequence classifier in
Keras 3 from the same checkpoint folder (or Hub id), with keras-hub's converters reading the PyTorch
``model.safetensors``. Only the backbone comes from keras-hub: tokenisation stays tfbert's own (keras-hub's
tokenizers would read a BertJapaneseTokenizer folder as plain WordPiece), and the head is the one
transformers puts on that family, so that the logits agree with ``TFAutoModelForSequenceClassification``.

The model takes the dict tfbert's tf.data yields: int ``input_ids``, ``attention_mask`` and, for BERT and
ALBERT, ``token_type_ids``. The attention mask stays an int tensor up to the backbone: a boolean mask broke
``fit`` under MirroredStrategy.

Example:
    >>> from tfbert.keras_backend import supports, build_classifier
    >>> supports(folder) is None  # doctest: +SKIP
    True
    >>> model = build_classifier(folder, ["neg", "neu", "pos"])  # doctest: +SKIP
    >>> logits = model({"input_ids": ids, "attention_mask": mask, "token_type_ids": types})  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional, Union

from tfbert.errors import TfbertError
from tfbert.keras_checkpoint import (FAMILIES, CheckpointTensors, checkpoint_preset, match_checkpoint_numerics,
                                     read_checkpoint_config)

logger = logging.getLogger(__name__)

SETTINGS_FILE = "keras_classifier.json"  # label names and head beside the weights, so the folder rebuilds alone
WEIGHTS_FILE = "model.weights.h5"
CONFIG_FILE = "config.json"  # the checkpoint's Hugging Face config: keras-hub rebuilds the backbone from it


def supports(name_or_path: Union[str, Path]) -> Optional[str]:
    """None when keras-hub can build this checkpoint's backbone, else the reason it cannot.

    Args:
        name_or_path: a local checkpoint folder or a Hugging Face Hub id.

    Example:
        >>> supports("google/electra-small-discriminator")  # doctest: +SKIP
        'electra: no keras-hub converter'
    """
    try:
        config = read_checkpoint_config(checkpoint_preset(name_or_path))
    except TfbertError as error:
        return str(error)
    model_type = config.get("model_type")
    if model_type not in FAMILIES:
        return f"{model_type or 'unknown model_type'}: no keras-hub converter"
    if config.get("position_embedding_type", "absolute") != "absolute":
        return f"{model_type}: position_embedding_type {config['position_embedding_type']!r} (keras-hub has absolute)"
    return None


def build_classifier(
    name_or_path: Union[str, Path],
    label_names: list[str],
    *,
    freeze_encoder: bool = False,
    head_hidden_size: int = 0,
    dropout: Optional[float] = None,
):
    """A Keras 3 sequence classifier: the checkpoint's backbone and the head transformers gives its family.

    Build it inside ``strategy.scope()``. A head the checkpoint already holds (a fine-tuned classifier with
    as many labels) is reused, as transformers does; otherwise the head starts fresh.

    Args:
        name_or_path: a local folder (config.json + model.safetensors) or a Hugging Face Hub id.
        label_names: the classes, in label-id order.
        freeze_encoder: keep the backbone's weights fixed.
        head_hidden_size: if set, the head is Dense(hidden, gelu) -> Dropout -> Dense(labels) on the
            features the family's head reads (BERT/ALBERT: the pooled [CLS]; others: the first token).
        dropout: overrides the checkpoint's dropout rates, backbone and head alike.

    Example:
        >>> model = build_classifier("/models/bert-base-uncased", ["neg", "pos"])  # doctest: +SKIP
        >>> model.output_shape
        (None, 2)
    """
    reason = supports(name_or_path)
    if reason:
        raise TfbertError(f"--model_name {name_or_path}: the Keras 3 backend cannot build it ({reason})")
    preset = checkpoint_preset(name_or_path)
    config = read_checkpoint_config(preset)
    settings = {
        "label_names": list(label_names),
        "model_type": config["model_type"],
        "head_hidden_size": int(head_hidden_size),
        "dropout": dropout,
        "freeze_encoder": bool(freeze_encoder),
    }
    backbone = _backbone(preset, config, dropout, load_weights=True)
    model = _assemble(backbone, config, settings)
    if not head_hidden_size:
        _load_checkpoint_head(model, preset, config)
    return model


def _backbone(preset: str, config: dict, dropout: Optional[float], load_weights: bool):
    import keras_hub

    family = FAMILIES[config["model_type"]]
    rate = dropout if dropout is not None else config.get(family.dropout_key, 0.1)
    try:
        backbone = keras_hub.models.Backbone.from_preset(preset, load_weights=load_weights, dropout=rate)
    except Exception as error:  # a missing tensor, an unreadable file: the user needs the folder and the cause
        raise TfbertError(
            f"--model_name {preset}: keras-hub could not load the {config['model_type']} backbone "
            f"({str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__})"
        ) from None
    match_checkpoint_numerics(backbone, config)
    if load_weights and family.fold_token_type:
        _fold_token_type_embedding(backbone, preset)
    return backbone


def _fold_token_type_embedding(backbone, preset: str) -> None:
    """RoBERTa adds token_type_embeddings[0] to every token; keras-hub's RoBERTa converter drops it.

    keras-hub's XLM-R converter folds it into the position embeddings; the same is done here for RoBERTa.
    """
    tensors = CheckpointTensors(preset)
    key = tensors.find("embeddings.token_type_embeddings.weight")
    if key is None:
        return
    positions = backbone.embeddings.position_embedding.position_embeddings
    positions.assign(positions + tensors.get(key)[0])


def _assemble(backbone, config: dict, settings: dict):
    """The functional classifier: tfbert's input dict -> backbone -> head -> float32 logits."""
    import keras

    family = FAMILIES[config["model_type"]]
    inputs = {name: keras.Input(shape=(None,), dtype="int32", name=name) for name in family.input_names}
    backbone_inputs = {"token_ids": inputs["input_ids"], "padding_mask": inputs["attention_mask"]}
    if "token_type_ids" in inputs:
        backbone_inputs["segment_ids"] = inputs["token_type_ids"]
    outputs = backbone(backbone_inputs)
    if settings["freeze_encoder"]:
        backbone.trainable = False
    head_dropout = settings["dropout"]
    if head_dropout is None:
        head_dropout = next((config[k] for k in family.head_dropout_keys if config.get(k) is not None), 0.1)
    if family.head == "pooled":
        features = outputs["pooled_output"]
    else:  # RoBERTa's and DistilBERT's backbones return the sequence itself, BERT's a dict
        sequence = outputs["sequence_output"] if isinstance(outputs, dict) else outputs
        features = sequence[:, 0, :]
    num_labels = len(settings["label_names"])
    if settings["head_hidden_size"]:
        logits = _mlp_head(features, settings["head_hidden_size"], head_dropout, num_labels)
    else:
        logits = _family_head(family.head, features, config, head_dropout, num_labels)
    model = keras.Model(inputs, logits, name=f"tfbert_{config['model_type'].replace('-', '_')}_classifier")
    model.tfbert_settings = json.dumps(settings)  # a string: Keras wraps dicts set on a model
    model.tfbert_config = json.dumps(config)
    return model


def _dense(units: int, name: str, activation=None, dtype=None):
    import keras

    return keras.layers.Dense(units, activation=activation, name=name, dtype=dtype,
                              kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02))


def _family_head(kind: str, features, config: dict, rate: float, num_labels: int):
    """The head transformers' *ForSequenceClassification puts on ``features``.

    pooled (BERT, ALBERT): dropout -> dense on the backbone's pooled [CLS].
    first_token_tanh (RoBERTa, XLM-R): dropout -> dense(tanh) -> dropout -> out_proj on <s>.
    first_token_relu (DistilBERT): pre_classifier dense(relu) -> dropout -> classifier on [CLS].
    """
    import keras

    hidden = features.shape[-1]
    if kind == "first_token_tanh":
        x = keras.layers.Dropout(rate, name="classifier_dropout")(features)
        x = _dense(hidden, "classifier_dense", activation="tanh")(x)
        x = keras.layers.Dropout(rate, name="classifier_dropout_2")(x)
        return _dense(num_labels, "classifier_out_proj", dtype="float32")(x)
    if kind == "first_token_relu":
        x = _dense(hidden, "pre_classifier", activation="relu")(features)
        x = keras.layers.Dropout(rate, name="classifier_dropout")(x)
        return _dense(num_labels, "classifier", dtype="float32")(x)
    x = keras.layers.Dropout(rate, name="classifier_dropout")(features)
    return _dense(num_labels, "classifier", dtype="float32")(x)


def _mlp_head(features, hidden_size: int, rate: float, num_labels: int):
    """tfbert's --head_hidden_size head: Dense(hidden, gelu) -> Dropout -> Dense(labels)."""
    import keras

    x = _dense(hidden_size, "head_hidden", activation="gelu")(features)
    x = keras.layers.Dropout(rate, name="head_dropout")(x)
    return _dense(num_labels, "classifier", dtype="float32")(x)


def _load_checkpoint_head(model, preset: str, config: dict) -> None:
    """Copy the checkpoint's classifier weights into the head when it has all of them, shapes matching."""
    family = FAMILIES[config["model_type"]]
    tensors = CheckpointTensors(preset)
    pairs = []
    for layer_name, prefix in family.head_weights:
        layer = model.get_layer(layer_name)
        kernel, bias = tensors.find(f"{prefix}.weight", exact=True), tensors.find(f"{prefix}.bias", exact=True)
        if kernel is None or bias is None:
            return
        kernel, bias = tensors.get(kernel).T, tensors.get(bias)  # PyTorch keeps [out, in]
        if kernel.shape != tuple(layer.kernel.shape) or bias.shape != tuple(layer.bias.shape):
            logger.info("checkpoint head %s has shape %s, not %s: fresh head", prefix, kernel.shape,
                        tuple(layer.kernel.shape))
            return
        pairs.append((layer, kernel, bias))
    for layer, kernel, bias in pairs:
        layer.kernel.assign(kernel)
        layer.bias.assign(bias)
    logger.info("reused the checkpoint's classification head (%d layers)", len(pairs))


def settings_of(model) -> dict:
    """The settings :func:`build_classifier` recorded on ``model`` (label names, head, dropout).

    Example:
        >>> settings_of(model)["label_names"]  # doctest: +SKIP
        ['neg', 'neu', 'pos']
    """
    return json.loads(model.tfbert_settings)


def save(model, folder: Union[str, Path]) -> Path:
    """Write the classifier as config.json (the checkpoint's), keras_classifier.json and model.weights.h5.

    Weights plus the settings rather than a ``.keras`` file: the exact GELU and LayerNorm epsilon are set on
    keras-hub's layers after construction, which keras-hub's own config would not record.

    Example:
        >>> save(model, "run/model_keras")  # doctest: +SKIP
        >>> load("run/model_keras").predict(batch)  # doctest: +SKIP
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps(json.loads(model.tfbert_config), indent=2), encoding="utf-8")
    (folder / SETTINGS_FILE).write_text(json.dumps(settings_of(model), indent=2), encoding="utf-8")
    # A compiled model's save_weights also writes its optimizer's variables (AdamW: twice the weights again);
    # the model folder holds the weights only. keras.Model.save_weights has no way to leave them out.
    from keras.src.saving import saving_lib

    optimizer = getattr(model, "optimizer", None)
    saving_lib.save_weights_only(model, str(folder / WEIGHTS_FILE), objects_to_skip=[optimizer] if optimizer else None)
    return folder


def load(folder: Union[str, Path]):
    """Rebuild a classifier written by :func:`save` (no checkpoint or network needed).

    Example:
        >>> model = load("run/model_keras")  # doctest: +SKIP
    """
    folder = Path(folder)
    missing = [name for name in (CONFIG_FILE, SETTINGS_FILE, WEIGHTS_FILE) if not (folder / name).is_file()]
    if missing:
        raise TfbertError(f"--model {folder}: not a Keras 3 classifier folder (lacks {', '.join(missing)})")
    config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    settings = json.loads((folder / SETTINGS_FILE).read_text(encoding="utf-8"))
    backbone = _backbone(str(folder), config, settings["dropout"], load_weights=False)
    model = _assemble(backbone, config, settings)
    model.load_weights(str(folder / WEIGHTS_FILE))
    return model
