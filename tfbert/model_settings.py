"""What a predictor needs beyond the weights and the tokenizer files: one schema for the three places it is written.

    model/tfbert.json                               beside save_pretrained's files
    saved_model/<v>/assets.extra/tfbert/metadata.json   the same keys, and what the export adds (signatures, ...)
    compact/tfbert.json                             the same keys, and the TFLite file's format

Files written before this schema still read: keys it does not know are ignored, missing ones take their defaults.

Example:
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> _ = ModelSettings(labels=["neg", "pos"], max_length=128).write(folder)
    >>> ModelSettings.read(folder).max_length
    128
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from tfbert.errors import TfbertError

SETTINGS_FILE = "tfbert.json"
EXPORT_METADATA = Path("assets.extra") / "tfbert" / "metadata.json"  # in a SavedModel version folder


@dataclass
class ModelSettings:
    """How texts become the model's inputs, and what its outputs mean.

    Attributes:
        labels: label names by class index ([] in folders written before labels were recorded: the model's
            config.json has them too).
        max_length: tokens per text including the special tokens, as in training (None: the model's limit).
        truncation: head, tail or head_tail, as in training.
        word_tokenizer: the word splitter of a Japanese tokenizer (None: the tokenizer's own).
        uses_token_type_ids: whether the model reads token type ids (None: not recorded).
        head_hidden_size: the hidden size of the MLP head set on a frozen encoder; 0 for the checkpoint's own
            head, None where it is not recorded (the exports' graphs hold the head whatever it is).
        left_out_layers: encoder layers of the trained model this one leaves out (the compact export's search).
        backend: the model layer that trained it: transformers (save_pretrained's files) or keras (Keras 3:
            tfbert.keras_backend.save's files).
        task: single_label, multi_label or regression (tfbert.tasks): what the outputs are.
        thresholds: a multi-label model's decision threshold per label, in label order.
        long_text, stride, window_pool: truncate, or window: texts over max_length read in windows sharing ``stride``
            tokens, one answer pooled from theirs by ``window_pool`` (tfbert.windows).
        text_pairs: whether the model reads a second text per example (trained with --text_pair_column); None where
            it is not recorded (folders written before 2026-12-07: their run's config.json says).
    """

    labels: list[str] = field(default_factory=list)
    max_length: Optional[int] = None
    truncation: str = "head"
    word_tokenizer: Optional[str] = None
    uses_token_type_ids: Optional[bool] = None
    head_hidden_size: Optional[int] = None
    left_out_layers: list[int] = field(default_factory=list)
    backend: str = "transformers"
    task: str = "single_label"
    thresholds: Optional[list[float]] = None
    long_text: str = "truncate"
    stride: int = 64
    window_pool: str = "mean"
    text_pairs: Optional[bool] = None

    def to_json(self, **extra: Any) -> dict:
        """The settings as a JSON object, followed by ``extra`` keys (what one kind of file adds).

        Example:
            >>> ModelSettings(labels=["a"]).to_json(format="tflite")["format"]
            'tflite'
        """
        return {**dataclasses.asdict(self), **extra}

    @classmethod
    def from_json(cls, data: dict) -> "ModelSettings":
        """Settings from a JSON object, ignoring the keys that are not settings (an export's own, or old ones).

        Example:
            >>> ModelSettings.from_json({"max_length": 64, "signatures": {}}).max_length
            64
        """
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})

    def write(self, folder: str | Path, name: str = SETTINGS_FILE, **extra: Any) -> Path:
        """Write ``folder/name`` (``extra``: keys this file adds after the settings) and return its path.

        Example:
            >>> ModelSettings(max_length=32).write("output/run/model").name  # doctest: +SKIP
            'tfbert.json'
        """
        path = Path(folder) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(**extra), indent=2, ensure_ascii=False), encoding="utf-8")
        return path

    @classmethod
    def read(cls, folder: str | Path, name: str = SETTINGS_FILE) -> "ModelSettings":
        """The settings in ``folder/name``; the defaults when there is no such file (a plain save_pretrained folder).

        Example:
            >>> ModelSettings.read("output/run/model").truncation  # doctest: +SKIP
            'head'
        """
        path = Path(folder) / name
        return cls.from_json(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else cls()


def find_settings(path: str | Path) -> Optional[ModelSettings]:
    """The settings recorded for ``path``: a run folder (its model/), a model or compact folder, a SavedModel version
    or base path (its newest version); None when none is recorded there.

    Example:
        >>> find_settings("output/run/compact").text_pairs  # doctest: +SKIP
        False
    """
    path = Path(path)
    try:
        saved_model = [resolve_version(path) / EXPORT_METADATA]  # the version folder, or a base path's newest
    except TfbertError:
        saved_model = []
    for candidate in (path / SETTINGS_FILE, path / "model" / SETTINGS_FILE, *saved_model):
        if candidate.is_file():
            return ModelSettings.from_json(json.loads(candidate.read_text(encoding="utf-8")))
    return None


def resolve_version(path: str | Path) -> Path:
    """A SavedModel version folder: the folder itself, or the newest numbered version under a base path.

    Example:
        >>> resolve_version("output/run/saved_model")  # doctest: +SKIP
        PosixPath('output/run/saved_model/2')
    """
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    versions = sorted((int(p.name) for p in path.iterdir() if p.name.isdigit() and (p / "saved_model.pb").is_file()),
                      reverse=True) if path.is_dir() else []
    if not versions:
        raise TfbertError(f"--model {path}: no saved_model.pb here or in numbered version folders")
    return path / str(versions[0])
