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

from tfbert.distribution import PARAMETER_SERVER_REFUSAL, STRATEGIES
from tfbert.errors import TfbertError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_DATASET = "demo_reviews"
VERBOSE_HELP = "also show TensorFlow's start-up lines and the libraries' info logs (hidden by default)"


def setting(text: str, **kwargs: Any) -> Any:
    """A dataclass field whose metadata HfArgumentParser turns into the flag's help and choices."""
    return field(metadata={"help": text, **kwargs.pop("meta", {})}, **kwargs)


@dataclass
class DataConfig:
    """Where the examples come from and how they are split and truncated."""

    dataset: Optional[str] = setting(
        "named dataset preset (demo_reviews, amazon_ja, livedoor, ag_news, imdb, sms_spam); "
        f"default {DEFAULT_DATASET} unless --train_file is given",
        default=None,
    )
    data_dir: Optional[str] = setting(
        "folder or archive with a preset's original files (offline); without it presets load from the Hub",
        default=None,
    )
    train_file: Optional[str] = setting(
        "training data: .jsonl, .json, .csv, .tsv, .parquet, or a folder with one subfolder per class",
        default=None,
    )
    validation_file: Optional[str] = setting(
        "validation data (same formats); default: a seeded stratified share of the training data",
        default=None,
    )
    test_file: Optional[str] = setting(
        "test data (same formats); default: a seeded stratified share of the training data",
        default=None,
    )
    text_column: str = setting("column holding the text", default="text")
    text_pair_column: Optional[str] = setting(
        "column holding a second text (sentence pairs, title + body)", default=None
    )
    label_column: str = setting("column holding the label (strings or integers)", default="label")
    columns: Optional[str] = setting(
        "column names of CSV/TSV files without a header row, in order, e.g. label,text (_ skips a column); "
        "applies to every file of the run",
        default=None,
    )
    label_names: Optional[str] = setting(
        "comma-separated label names fixing their order (default: sorted labels of the training data)",
        default=None,
    )
    label_scheme: Optional[str] = setting(
        "preset label scheme, e.g. '5' keeps amazon_ja's five star classes, 'stars' its 1-5 as a score "
        "(default: the preset's own)",
        default=None,
    )
    task: str = setting("single_label, multi_label (several labels per text), regression (a numeric score); auto: "
                        "multi_label for label lists or --label_columns/--label_separator, else single_label",
                        default="auto", meta={"choices": ["auto", "single_label", "multi_label", "regression"]})
    label_separator: Optional[str] = setting("multi-label: the separator of labels in one string, e.g. ','",
                                             default=None)
    label_columns: Optional[str] = setting("multi-label: comma-separated 0/1 columns, one per label", default=None)
    allow_empty_labels: bool = setting("multi-label: accept examples with no label at all", default=False)
    split_ratio: str = setting(
        "train:validation:test ratio used for the splits not given as files", default="8:1:1"
    )
    max_train_samples: Optional[int] = setting(
        "keep a seeded stratified subset of this many training examples, after splitting (quick trials)",
        default=None,
    )
    max_eval_samples: Optional[int] = setting(
        "keep a seeded stratified subset of this many examples of the validation and of the test split",
        default=None,
    )
    dedupe: bool = setting(
        "remove duplicate texts and texts of a later split found in an earlier one", default=False
    )
    max_length: int = setting("maximum tokens per example, [CLS] and [SEP] included", default=128)
    truncation: str = setting(
        "which tokens to keep when a text is too long: head, tail or head_tail",
        default="head",
        meta={"choices": ["head", "tail", "head_tail"]},
    )
    long_text: str = setting(
        "a text over --max_length tokens: truncate (--truncation says which part stays), or window: read it whole "
        "in overlapping windows, each classified, the text's answer pooled from theirs (--window_pool)",
        default="truncate", meta={"choices": ["truncate", "window"]})
    stride: int = setting("--long_text window: tokens each window shares with the one before", default=64)
    window_pool: str = setting("--long_text window: how a text's answer is made of its windows': mean (of the "
                               "logits) or max", default="mean", meta={"choices": ["mean", "max"]})
    cache_dir: str = setting(
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

    model_name: str = setting(
        "hub id or local folder of a BERT-family checkpoint (default: the bundled all-MiniLM-L6-v2)",
        default=DEFAULT_MODEL,
    )
    word_tokenizer: Optional[str] = setting(
        "Japanese BERT word splitter: mecab (fugashi + unidic-lite) or basic (no MeCab; splits only at spaces "
        "and punctuation, so unspaced Japanese stays one word per run and WordPiece cuts it greedily)",
        default=None,
        meta={"choices": ["mecab", "basic"]},
    )
    freeze_encoder: bool = setting(
        "train only the classification head, keeping the encoder's weights fixed", default=False
    )
    head_hidden_size: int = setting(
        "with --freeze_encoder: hidden units of a small MLP head (0: a linear head)", default=0
    )
    backend: str = setting(
        "model layer: keras (Keras 3, keras-hub: BERT, ALBERT, DistilBERT, RoBERTa, XLM-R), transformers "
        "(transformers' TF classes on Keras 2), or auto (picks one; config.json records which and why)",
        default="auto", meta={"choices": ["auto", "keras", "transformers"]},
    )
    keras_backend: str = setting(
        "with --backend keras: what Keras 3 runs on (jax needs JAX installed and one device)",
        default="tensorflow", meta={"choices": ["tensorflow", "jax"]},
    )


@dataclass
class TrainingConfig:
    """Optimisation, callbacks, hardware and where results go."""

    epochs: int = setting("number of passes over the training data", default=3)
    batch_size: int = setting("global batch: examples per step summed over all devices and workers", default=32)
    lr: float = setting("peak learning rate of AdamW", default=5e-5)
    warmup_ratio: float = setting("share of steps with a linear learning-rate warm-up", default=0.1)
    weight_decay: float = setting("AdamW weight decay (never applied to LayerNorm or bias)", default=0.01)
    seed: int = setting("random seed for splits, shuffling and initialisation", default=42)
    patience: int = setting(
        "stop after this many epochs without a better validation macro-F1 (0: never stop early)",
        default=2,
    )
    class_weight: Optional[str] = setting(
        "'balanced' weighs the loss by inverse class frequency", default=None, meta={"choices": ["balanced"]}
    )
    threshold: str = setting("multi-label decision threshold: auto tunes one per label on validation F1, or a number "
                             "such as 0.5 for every label", default="auto")
    precision: str = setting(
        "float32, bfloat16 or float16 mixed precision; auto picks bfloat16 where the hardware has it",
        default="auto",
        meta={"choices": ["auto", "float32", "bfloat16", "float16"]},
    )
    xla: bool = setting("compile the training step with XLA", default=False)
    fused_ops: str = setting(
        "exact GELU as one XLA kernel and dropout from 16-bit masks (same functions, faster on CPU); "
        "auto: on when training on CPU",
        default="auto",
        meta={"choices": ["auto", "on", "off"]},
    )
    export_precision: str = setting(
        "precision of the exported SavedModel; auto: bfloat16 after bfloat16 training, else float32",
        default="auto",
        meta={"choices": ["auto", "float32", "bfloat16"]},
    )
    export_weights: str = setting(
        "where the SavedModel keeps the weights; constants: in the graph, laid out for oneDNN once at load (~1 GiB "
        "more memory and a slower start for MiniLM; a tenth faster in processes that may not assume frozen weights); "
        "variables: in variables/, in the precision the export computes with (as fast in infer.py and serve.py); "
        "auto: variables",
        default="auto",
        meta={"choices": ["auto", "constants", "variables"]},
    )
    export_tflite: str = setting(
        "also write compact/model_int8.tflite (TFLite with dynamic-range int8 weights, run by LiteRT without "
        "TensorFlow; the model's thresholds and windows), which infer.py answers from when it gives the model's "
        "labels, and record its test macro-F1 (Pearson r for regression) beside the model's; auto: on, except with "
        "--keras_backend jax; a bare --export_tflite is on",
        default="auto",
        meta={"choices": ["auto", "on", "off"], "nargs": "?", "const": "on"},
    )
    compact_layers: str = setting(
        "encoder layers of the compact export; all: keep every layer; auto: leave layers out one at a time, the "
        "least harmful first, while the float32 model's validation macro-F1 (Pearson r for regression) stays within "
        "--compact_max_f1_drop of the full model's (a search that takes longer than the conversion)",
        default="all",
        meta={"choices": ["all", "auto"]},
    )
    compact_max_f1_drop: float = setting(
        "validation macro-F1 (Pearson r for regression) that --compact_layers auto may give up for speed",
        default=0.005
    )
    pad_to_multiple_of: int = setting(
        "round each batch's length up to a multiple of this (fewer shapes to compile); 0: 16 with --xla, else 8",
        default=0,
    )
    grad_accum_steps: int = setting(
        "sum the gradients of this many batches before each update: an effective batch of "
        "batch_size x grad_accum_steps in the memory of batch_size",
        default=1,
    )
    deterministic: bool = setting(
        "turn on TensorFlow's op determinism (slower)", default=False
    )
    baseline: str = setting(
        "on: fit a TF-IDF + logistic-regression baseline on the same splits and report it beside the model",
        default="on", meta={"choices": ["on", "off"]},
    )
    strategy: str = setting("tf.distribute strategy; auto: multi_worker when TF_CONFIG names several workers, tpu "
                          "with --tpu, mirrored on 1+ GPUs, else default", default="auto", meta={"choices": STRATEGIES})
    tpu: str = setting("TPU address for --strategy tpu/auto (grpc://host:8470, a TPU name, or local)", default="")
    top_errors: int = setting("how many of the most confident wrong predictions to list", default=20)
    output_dir: str = setting("where run folders are created", default="output")
    plots_dir: str = setting("where run figures are created", default="plots")
    keep_checkpoints: bool = setting(
        "keep checkpoints/ (the best epoch's weights, the backups of the training state) after a finished run; "
        "without it only a failed run keeps them", default=False
    )
    save_every: int = setting("back the training state up every this many steps, besides each epoch end (0: only "
                            "there); SIGTERM/SIGINT also save one before stopping", default=0)
    resume: Optional[str] = setting("continue an interrupted run with its own settings: its folder, or auto (the newest "
                                  "unfinished run of this dataset and model, else a new run)", default=None)
    log_every: int = setting(
        "when stdout is not a terminal, log progress every this many steps (0: ~15 lines per epoch)", default=0
    )
    quiet: bool = setting("no progress bars; print only the summary", default=False)
    json: bool = setting("print the summary as one JSON object", default=False)
    verbose: bool = setting(VERBOSE_HELP, default=False)


@dataclass
class TrainConfig:
    """All settings of one training run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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


TRAIN_DESCRIPTION = "Fine-tune a BERT-family encoder for text classification and write a complete run folder."


def build_parser(prog: str = "train.py", description: str = TRAIN_DESCRIPTION):
    """The parser of train.py (or of a command built on it): one flag per dataclass field (HfArgumentParser)."""
    from transformers import HfArgumentParser

    return HfArgumentParser(tuple(_SECTIONS.values()), prog=prog, description=description)


def parse_sections(parser, argv: Optional[list[str]] = None) -> list:
    """The dataclasses (and any extra namespace) of an HfArgumentParser; an unknown argument ends as argparse's
    own errors do (usage, one line, exit 2) instead of HfArgumentParser's ValueError traceback."""
    *sections, remaining = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if remaining:
        parser.error(f"unrecognized arguments: {' '.join(remaining)}")
    return sections


def parse_train_args(argv: Optional[list[str]] = None, prog: str = "train.py",
                     description: str = TRAIN_DESCRIPTION) -> TrainConfig:
    """Parse train.py's command line into a validated :class:`TrainConfig`."""
    sections = parse_sections(build_parser(prog, description), argv)
    config = TrainConfig(*sections)
    validate(config)
    return config


def column_names(columns: Optional[str]) -> Optional[list[str]]:
    """--columns as a list of names ('_' for a skipped column): "label,text,_" -> ['label', 'text', '_']."""
    return [name.strip() for name in columns.split(",")] if columns else None


def data_problems(d: DataConfig) -> list[str]:
    names = column_names(d.columns) or []
    named = [n for n in names if n != "_"]
    checks = [(value is not None and value < 1, f"{flag} must be at least 1") for flag, value in
              (("--max_train_samples", d.max_train_samples), ("--max_eval_samples", d.max_eval_samples))]
    checks.append(("" in names or len(set(named)) != len(named),
                   f"--columns {d.columns}: give distinct, non-empty names separated by commas, e.g. label,text"))
    for flag, column in (("--text_column", d.text_column), ("--label_column", d.label_column),
                         ("--text_pair_column", d.text_pair_column)):
        checks.append((names and column and column not in named,
                       f"--columns {d.columns} names no {column!r} column; name one {column} or set {flag}"))
    window = d.long_text == "window"
    checks += [(window and d.truncation != "head", f"--truncation {d.truncation} is for --long_text truncate; "
                "windows read the whole text, drop it"),
               (window and d.stride < 0, "--stride must not be negative (tokens a window shares with the one before)")]
    return [message for failed, message in checks if failed]


def validate(config: TrainConfig) -> None:
    """Collect every problem with the settings and raise one error naming the flags."""
    t, d, m = config.training, config.data, config.model
    try:
        parse_split_ratio(d.split_ratio)
        ratio_problem = ""
    except TfbertError as error:
        ratio_problem = str(error)
    raise_problems([
        (t.epochs < 1, "--epochs must be at least 1"),
        (t.batch_size < 1, "--batch_size must be at least 1"),
        (not 0 < t.lr < 1, "--lr must be between 0 and 1 (e.g. 5e-5)"),
        (not 0 <= t.warmup_ratio < 1, "--warmup_ratio must be in [0, 1)"),
        (t.weight_decay < 0, "--weight_decay must not be negative"),
        (t.pad_to_multiple_of < 0, "--pad_to_multiple_of must not be negative (0 picks it)"),
        (t.grad_accum_steps < 1, "--grad_accum_steps must be at least 1"),
        (t.patience < 0, "--patience must not be negative"),
        (not 0 <= t.compact_max_f1_drop < 1, "--compact_max_f1_drop must be in [0, 1) (e.g. 0.005)"),
        (t.log_every < 0, "--log_every must not be negative (0 picks ~15 lines per epoch)"),
        (t.save_every < 0, "--save_every must not be negative (0: back up at epoch ends only)"),
        (t.top_errors < 0, "--top_errors must not be negative"),
        (t.strategy == "parameter_server", PARAMETER_SERVER_REFUSAL),
        (t.tpu and t.strategy not in ("auto", "tpu"), f"--tpu needs --strategy tpu or auto, not {t.strategy}"),
        (d.max_length < 8, "--max_length must be at least 8"),
        (m.head_hidden_size < 0, "--head_hidden_size must not be negative"),
        (m.head_hidden_size and not m.freeze_encoder,
         "--head_hidden_size needs --freeze_encoder (the MLP head is for a frozen encoder)"),
        *((True, problem) for problem in data_problems(d)),
        *((True, problem) for problem in backend_problems(config)),
        (d.dataset and d.train_file, "give either --dataset or --train_file, not both"),
        ((d.validation_file or d.test_file) and not d.train_file, "--validation_file/--test_file need --train_file"),
        (ratio_problem, ratio_problem),
        *task_problems(d, t),
    ])


def backend_problems(config: TrainConfig) -> list[str]:
    """The settings --backend keras cannot honour (see tfbert.backends)."""
    from tfbert.backends import keras_problems

    return keras_problems(config) if config.model.backend == "keras" else (
        ["--keras_backend jax needs --backend keras"] if config.model.keras_backend != "tensorflow" else [])


def task_problems(d: DataConfig, t: TrainingConfig) -> list[tuple[Any, str]]:
    from tfbert.tasks import threshold_problem

    return [(d.task in ("regression", "multi_label") and t.class_weight, f"--class_weight is for single-label "
             f"tasks; --task {d.task} has no classes to weigh, drop it"),
            ((d.label_separator or d.label_columns) and d.task in ("single_label", "regression"),
             f"--label_separator/--label_columns are for multi-label data, not --task {d.task}"),
            (threshold_problem(t.threshold), threshold_problem(t.threshold))]


def raise_problems(checks: list[tuple[Any, str]]) -> None:
    """Raise one TfbertError naming every failed check's message (collect-all validation)."""
    problems = [message for failed, message in checks if failed]
    if problems:
        raise TfbertError("; ".join(problems))
