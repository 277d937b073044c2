"""What the Keras 3 backend needs to know of a Hugging Face checkpoint: where it is, its family, its tensors.

Example:
    >>> from tfbert.keras_checkpoint import checkpoint_preset
    >>> checkpoint_preset("FacebookAI/roberta-base")
    'hf://FacebookAI/roberta-base'
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from tfbert.errors import TfbertError

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX_FILE = "model.safetensors.index.json"
# Activation names in Hugging Face configs -> (Keras activation, approximate). gelu_new, gelu_pytorch_tanh
# and gelu_fast are the tanh approximation; plain "gelu" is the exact erf form.
ACTIVATIONS = {
    "gelu": ("gelu", False),
    "gelu_new": ("gelu", True),
    "gelu_pytorch_tanh": ("gelu", True),
    "gelu_fast": ("gelu", True),
    "relu": ("relu", None),
    "silu": ("silu", None),
    "swish": ("silu", None),
}


@dataclass(frozen=True)
class Family:
    """How one model_type maps onto keras-hub and onto transformers' sequence-classification head."""

    input_names: tuple[str, ...]
    head: str  # pooled | first_token_tanh | first_token_relu (see keras_backend._family_head)
    head_weights: tuple[tuple[str, str], ...]  # (Keras layer name, checkpoint tensor prefix)
    head_dropout_keys: tuple[str, ...]  # config keys, first one set wins
    dropout_key: str = "hidden_dropout_prob"
    fold_token_type: bool = False


_WITH_SEGMENTS = ("input_ids", "attention_mask", "token_type_ids")
_WITHOUT_SEGMENTS = ("input_ids", "attention_mask")
_ROBERTA_HEAD = (("classifier_dense", "classifier.dense"), ("classifier_out_proj", "classifier.out_proj"))

FAMILIES = {
    "bert": Family(_WITH_SEGMENTS, "pooled", (("classifier", "classifier"),),
                   ("classifier_dropout", "hidden_dropout_prob")),
    "albert": Family(_WITH_SEGMENTS, "pooled", (("classifier", "classifier"),), ("classifier_dropout_prob",)),
    "distilbert": Family(_WITHOUT_SEGMENTS, "first_token_relu",
                         (("pre_classifier", "pre_classifier"), ("classifier", "classifier")),
                         ("seq_classif_dropout",), dropout_key="dropout"),
    "roberta": Family(_WITHOUT_SEGMENTS, "first_token_tanh", _ROBERTA_HEAD,
                      ("classifier_dropout", "hidden_dropout_prob"), fold_token_type=True),
    "xlm-roberta": Family(_WITHOUT_SEGMENTS, "first_token_tanh", _ROBERTA_HEAD,
                          ("classifier_dropout", "hidden_dropout_prob")),
}


def checkpoint_preset(name_or_path: Union[str, Path]) -> str:
    """The keras-hub preset for a checkpoint: a local folder as a string, tfbert's bundled copy, else ``hf://id``.

    Example:
        >>> checkpoint_preset("FacebookAI/roberta-base")
        'hf://FacebookAI/roberta-base'
    """
    from tfbert.modeling import BUNDLED_MODELS, resolve_checkpoint

    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir() or name in BUNDLED_MODELS:
        return str(resolve_checkpoint(name))  # keras-hub needs a str; resolve_checkpoint checks config.json
    if name.startswith("hf://"):
        return name
    if path.exists() or name.startswith((".", "/", "~")):
        raise TfbertError(f"--model_name {name}: no such folder; check the path")
    return f"hf://{name}"  # keras-hub's own Hub download and cache


def read_checkpoint_config(preset: str) -> dict:
    """The checkpoint's config.json as a dict, from the folder or the Hub.

    Example:
        >>> read_checkpoint_config("/models/bert-base-uncased")["model_type"]  # doctest: +SKIP
        'bert'
    """
    try:
        return json.loads(Path(_checkpoint_file(preset, CONFIG_FILE)).read_text(encoding="utf-8"))
    except Exception as error:  # offline, unknown id, unreadable JSON: one message for the user
        reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise TfbertError(f"--model_name {preset}: cannot read its {CONFIG_FILE} ({reason})") from None


def _checkpoint_file(preset: str, filename: str) -> str:
    if preset.startswith("hf://"):
        from huggingface_hub import hf_hub_download

        return hf_hub_download(preset[len("hf://"):], filename)
    return str(Path(preset) / filename)


def _has_file(preset: str, filename: str) -> bool:
    if preset.startswith("hf://"):
        from huggingface_hub import file_exists

        return file_exists(preset[len("hf://"):], filename)
    return (Path(preset) / filename).is_file()


class CheckpointTensors:
    """Read single tensors of a checkpoint's safetensors (one file or shards), by PyTorch name.

    Example:
        >>> tensors = CheckpointTensors("/models/bert-base-uncased")  # doctest: +SKIP
        >>> tensors.get(tensors.find("embeddings.token_type_embeddings.weight")).shape  # doctest: +SKIP
        (2, 768)
    """

    def __init__(self, preset: str):
        self.preset = preset
        if _has_file(preset, SAFETENSORS_INDEX_FILE):
            index = json.loads(Path(_checkpoint_file(preset, SAFETENSORS_INDEX_FILE)).read_text(encoding="utf-8"))
            self.files = dict(index["weight_map"])
        else:
            from safetensors import safe_open

            with safe_open(_checkpoint_file(preset, SAFETENSORS_FILE), framework="np") as handle:
                self.files = {key: SAFETENSORS_FILE for key in handle.keys()}

    def find(self, key: str, exact: bool = False) -> Optional[str]:
        """The stored name of ``key``: itself, or (unless ``exact``) with a model prefix such as ``roberta.``."""
        if key in self.files:
            return key
        if exact:
            return None
        return next((name for name in self.files if name.endswith("." + key)), None)

    def get(self, key: str):
        from safetensors import safe_open

        with safe_open(_checkpoint_file(self.preset, self.files[key]), framework="np") as handle:
            return handle.get_tensor(key)


def match_checkpoint_numerics(backbone, config: dict) -> None:
    """Give keras-hub's layers the checkpoint's activation and LayerNorm epsilon.

    keras-hub's BERT and ALBERT always use the tanh-approximate GELU and RoBERTa a fixed epsilon of 1e-5;
    hidden states then differ from transformers' by about 1e-3. Here the checkpoint's own values are set.
    """
    import keras
    from keras_hub.layers import TransformerEncoder

    activation = _activation(config)
    epsilon = config.get("layer_norm_eps")
    for layer in backbone._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, TransformerEncoder) and activation is not None:
            layer.activation = activation
            layer._feedforward_intermediate_dense.activation = activation
        if isinstance(layer, keras.layers.LayerNormalization) and epsilon is not None:
            layer.epsilon = float(epsilon)


def _activation(config: dict):
    import keras

    for key in ("hidden_act", "activation"):
        name = config.get(key)
        if isinstance(name, str) and name in ACTIVATIONS:
            keras_name, approximate = ACTIVATIONS[name]
            if keras_name == "gelu":
                return _exact_gelu if not approximate else _approximate_gelu
            return keras.activations.get(keras_name)
    return None


def _exact_gelu(x):
    import keras

    return keras.activations.gelu(x, approximate=False)


def _approximate_gelu(x):
    import keras

    return keras.activations.gelu(x, approximate=True)
