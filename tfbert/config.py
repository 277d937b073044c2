"""Typed settings for a training run, their command-line flags, and their validation.

Every field has a default and a one-line help text; ``python train.py --help`` prints the same
words. The resolved settings are saved in each run's ``config.json``.

Example:
    >>> from tfbert.config import parse_train_args
    >>> config = parse_train_args(["--epochs", "2", "--lr", "3e-5"])
    >>> config.training.epochs
    2
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from tfbert.errors import TfbertError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_DATASET = "demo_reviews"


def _help(text: str, **kwargs: Any) -> Any:
    """A dataclass field whose metadata HfArgumentParser turns into the flag's help and choices."""
    return field(metadata={"help": text, **kwargs.pop("meta", {})}, **kwargs)


@dataclass
class DataConfig:
    """Where the examples come from and how they are split and truncated."""

    dataset: Optional[str] = _help(
        "named dataset preset (demo_reviews, amazon_ja, livedoor, ag_news, imdb, sms_spam); "
        f"default {DEFAULT_DATASET} unless --train_file is given",
        default=None,
    )
    data_dir: Optional[str] = _help(
        "folder or archive with a preset's original files (offline); without it presets load from the Hub",
        default=None,
    )
    train_file: Optional[str] = _help(
        "training data: .jsonl, .json, .csv, .tsv, .parquet, or a folder with one subfolder per class",
        default=None,
    )
    validation_file: Optional[str] = _help(
        "validation data (same formats); default: a seeded stratified share of the training data",
        default=None,
    )
    test_file: Optional[str] = _help(
        "test data (same formats); default: a seeded stratified share of the training data",
        default=None,
    )
    text_column: str = _help("column holding the text", default="text")
    text_pair_column: Optional[str] = _help(
        "column holding a second text (sentence pairs, title + body)", default=None
    )
    label_column: str = _help("column holding the label (strings or integers)", default="label")
    label_names: Optional[str] = _help(
        "comma-separated label names fixing their order (default: sorted labels of the training data)",
        default=None,
    )
    label_scheme: Optional[str] = _help(
        "preset label scheme, e.g. '5' keeps amazon_ja's five star classes (default: the preset's own)",
        default=None,
    )
    split_ratio: str = _help(
        "train:validation:test ratio used for the splits not given as files", default="8:1:1"
    )
    dedupe: bool = _help(
        "remove duplicate texts and texts of a later split found in an earlier one", default=False
    )
    max_length: int = _help("maximum tokens per example, [CLS] and [SEP] included", default=128)
    truncation: str = _help(
        "which tokens to keep when a text is too long: head, tail or head_tail",
        default="head",
        meta={"choices": ["head", "tail", "head_tail"]},
    )
    cache_dir: str = _help(
        "where tokenised splits are kept and reused (keyed by a digest of rows, tokenizer and settings); "
        "default $TFBERT_CACHE or ~/.cache/tfbert; 'off' turns caching off",
        default="",
    )

    def tokenization_cache(self) -> Optional[str]:
        """The folder for tokenised splits, or None when caching is off."""
        import os

        if self.cache_dir == "off":
            return None
        root = self.cache_dir or os.environ.get("TFBERT_CACHE") or os.path.expanduser("~/.cache/tfbert")
        return os.path.join(root, "tokenized")


@dataclass
class ModelConfig:
    """Which checkpoint to fine-tune and what head to put on it."""

    model_name: str = _help(
        "hub id or local folder of a BERT-family checkpoint (default: the bundled all-MiniLM-L6-v2)",
        default=DEFAULT_MODEL,
    )
    word_tokenizer: Optional[str] = _help(
        "Japanese BERT word splitter: mecab (fugashi + unidic-lite) or basic (no MeCab)",
        default=None,
        meta={"choices": ["mecab", "basic"]},
    )
    freeze_encoder: bool = _help(
        "train only the classification head, keeping the encoder's weights fixed", default=False
    )
    head_hidden_size: int = _help(
        "with --freeze_encoder: hidden units of a small MLP head (0: a linear head)", default=0
    )


@dataclass
class TrainingConfig:
    """Optimisation, callbacks, hardware and where results go."""

    epochs: int = _help("number of passes over the training data", default=3)
    batch_size: int = _help("examples per step (across all devices)", default=32)
    lr: float = _help("peak learning rate of AdamW", default=5e-5)
    warmup_ratio: float = _help("share of steps with a linear learning-rate warm-up", default=0.1)
    weight_decay: float = _help("AdamW weight decay (never applied to LayerNorm or bias)", default=0.01)
    seed: int = _help("random seed for splits, shuffling and initialisation", default=42)
    patience: int = _help(
        "stop after this many epochs without a better validation macro-F1 (0: never stop early)",
        default=2,
    )
    class_weight: Optional[str] = _help(
        "'balanced' weighs the loss by inverse class frequency", default=None, meta={"choices": ["balanced"]}
    )
    precision: str = _help(
        "float32, bfloat16 or float16 mixed precision; auto picks bfloat16 where the hardware has it",
        default="auto",
        meta={"choices": ["auto", "float32", "bfloat16", "float16"]},
    )
    xla: bool = _help("compile the training step with XLA", default=False)
    fused_ops: str = _help(
        "exact GELU as one XLA kernel and dropout from 16-bit masks (same functions, faster on CPU); "
        "auto: on when training on CPU",
        default="auto",
        meta={"choices": ["auto", "on", "off"]},
    )
    export_precision: str = _help(
        "precision of the exported SavedModel; auto: bfloat16 after bfloat16 training (on a bf16 CPU, 2.0x "
        "float32's throughput for MiniLM), else float32",
        default="auto",
        meta={"choices": ["auto", "float32", "bfloat16"]},
    )
    export_weights: str = _help(
        "where the SavedModel keeps the weights; constants: in the graph, converted once at load (MiniLM on "
        "2 cores: 1.35x the throughput, half the single-text latency, but ~2.4x a server's memory and ~2.2x "
        "its startup time); variables: converted on every request",
        default="constants",
        meta={"choices": ["constants", "variables"]},
    )
    export_tflite: bool = _help(
        "also write compact/model_int8.tflite (TFLite, dynamic-range int8 weights: ~1/4 of the float32 "
        "SavedModel) and record its test macro-F1 beside the model's",
        default=False,
    )
    compact_layers: str = _help(
        "encoder layers of the compact export; auto: leave layers out one at a time, the least harmful first, "
        "while the float32 model's validation macro-F1 stays within --compact_max_f1_drop of the full model's "
        "(each layer left out: ~1/n less work per text); all: keep every layer",
        default="auto",
        meta={"choices": ["auto", "all"]},
    )
    compact_max_f1_drop: float = _help(
        "validation macro-F1 that --compact_layers auto may give up for speed", default=0.005
    )
    pad_to_multiple_of: int = _help(
        "round each batch's length up to a multiple of this (fewer shapes to compile); 0: 16 with --xla, else 8",
        default=0,
    )
    grad_accum_steps: int = _help(
        "sum the gradients of this many batches before each update: an effective batch of "
        "batch_size x grad_accum_steps in the memory of batch_size",
        default=1,
    )
    deterministic: bool = _help(
        "turn on TensorFlow's op determinism (slower)", default=False
    )
    top_errors: int = _help("how many of the most confident wrong predictions to list", default=20)
    output_dir: str = _help("where run folders are created", default="output")
    plots_dir: str = _help("where run figures are created", default="plots")
    keep_checkpoints: bool = _help(
        "keep checkpoints/ (the best epoch's training state with optimizer slots) after a finished run; "
        "without it only a failed run keeps them", default=False
    )
    log_every: int = _help(
        "when stdout is not a terminal, log progress every this many steps (0: ~15 lines per epoch)", default=0
    )
    quiet: bool = _help("no progress bars; print only the summary", default=False)
    json: bool = _help("print the summary as one JSON object", default=False)


@dataclass
class TrainConfig:
    """All settings of one training run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def split_fractions(self) -> tuple[float, float, float]:
        return parse_split_ratio(self.data.split_ratio)

    @property
    def label_name_list(self) -> Optional[list[str]]:
        if not self.data.label_names:
            return None
        return [name.strip() for name in self.data.label_names.split(",") if name.strip()]


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "training": TrainingConfig}


def parse_split_ratio(text: str) -> tuple[float, float, float]:
    """Turn '8:1:1' into fractions (0.8, 0.1, 0.1).

    Example:
        >>> parse_split_ratio("8:1:1")
        (0.8, 0.1, 0.1)
    """
    try:
        parts = [float(p) for p in text.split(":")]
    except ValueError:
        parts = []
    if len(parts) != 3 or any(p < 0 for p in parts) or parts[0] <= 0 or sum(parts) <= 0:
        raise TfbertError(f"--split_ratio {text!r}: expected three non-negative numbers like 8:1:1")
    total = sum(parts)
    return tuple(round(p / total, 6) for p in parts)  # type: ignore[return-value]


def build_parser():
    """The parser of train.py: one flag per dataclass field (transformers' HfArgumentParser)."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(
        tuple(_SECTIONS.values()),
        prog="train.py",
        description="Fine-tune a BERT-family encoder for text classification and write a complete run folder.",
    )
    return parser


def parse_train_args(argv: Optional[list[str]] = None) -> TrainConfig:
    """Parse train.py's command line into a validated :class:`TrainConfig`."""
    sections = build_parser().parse_args_into_dataclasses(args=argv)
    config = TrainConfig(*sections)
    validate(config)
    return config


def validate(config: TrainConfig) -> None:
    """Collect every problem with the settings and raise one error naming the flags."""
    problems = []
    t, d, m = config.training, config.data, config.model
    if t.epochs < 1:
        problems.append("--epochs must be at least 1")
    if t.batch_size < 1:
        problems.append("--batch_size must be at least 1")
    if not 0 < t.lr < 1:
        problems.append("--lr must be between 0 and 1 (e.g. 5e-5)")
    if not 0 <= t.warmup_ratio < 1:
        problems.append("--warmup_ratio must be in [0, 1)")
    if t.weight_decay < 0:
        problems.append("--weight_decay must not be negative")
    if t.pad_to_multiple_of < 0:
        problems.append("--pad_to_multiple_of must not be negative (0 picks it)")
    if t.grad_accum_steps < 1:
        problems.append("--grad_accum_steps must be at least 1")
    if t.patience < 0:
        problems.append("--patience must not be negative")
    if not 0 <= t.compact_max_f1_drop < 1:
        problems.append("--compact_max_f1_drop must be in [0, 1) (e.g. 0.005)")
    if t.log_every < 0:
        problems.append("--log_every must not be negative (0 picks ~15 lines per epoch)")
    if t.top_errors < 0:
        problems.append("--top_errors must not be negative")
    if d.max_length < 8:
        problems.append("--max_length must be at least 8")
    if m.head_hidden_size < 0:
        problems.append("--head_hidden_size must not be negative")
    if m.head_hidden_size and not m.freeze_encoder:
        problems.append("--head_hidden_size needs --freeze_encoder (the MLP head is for a frozen encoder)")
    if d.dataset and d.train_file:
        problems.append("give either --dataset or --train_file, not both")
    if (d.validation_file or d.test_file) and not d.train_file:
        problems.append("--validation_file/--test_file need --train_file")
    try:
        parse_split_ratio(d.split_ratio)
    except TfbertError as error:
        problems.append(str(error))
    if problems:
        raise TfbertError("; ".join(problems))


def dataset_name(config: TrainConfig) -> str:
    """The name a run is filed under: the preset, or the training file's stem."""
    from pathlib import Path

    if config.data.train_file:
        return Path(config.data.train_file).stem or "custom"
    return config.data.dataset or DEFAULT_DATASET
