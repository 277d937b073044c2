"""Typed settings of infer.py, serve.py and evaluate.py, their one-line help texts and their collect-all validation.

train.py's settings are in :mod:`tfbert.config`; :mod:`tfbert.cli` parses both kinds.

Example:
    >>> from tfbert.command_configs import ServeConfig, validate_serve
    >>> validate_serve(ServeConfig(port=8501))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from tfbert.config import VERBOSE_HELP, DataConfig, data_problems, raise_problems, setting


def _positional(text: str) -> Any:
    """A field HfArgumentParser leaves out (init=False); its entry point adds it as a positional or repeated flag."""
    return field(default_factory=list, init=False, metadata={"help": text})


@dataclass
class InferConfig:
    """Settings of infer.py: which model, which texts, how answers are printed."""

    texts: list[str] = _positional("texts to classify")
    text_pair: list[str] = _positional(
        "second text of a pair, once per positional text in order (for models trained with --text_pair_column); "
        "a pair model given no pairs answers with a warning, a single-text model given pairs is an error"
    )
    model: Optional[str] = setting("run folder, save_pretrained folder, SavedModel or compact/ TFLite folder "
                                 "(default: newest run)", default=None)
    output_dir: str = setting("where to look for the newest run", default="output")
    server: Optional[str] = setting("URL of a TF Serving-compatible endpoint, e.g. "
                                  "http://127.0.0.1:8501/v1/models/tfbert", default=None)
    file: Optional[str] = setting("read texts from a file: one text a line (.txt), JSON Lines (.jsonl) or CSV/TSV "
                                "with a header row", default=None)
    text_column: str = setting("field/column holding the text in a JSON Lines or CSV/TSV --file", default="text")
    text_pair_column: Optional[str] = setting("field/column holding the second text in a JSON Lines or CSV/TSV --file",
                                            default=None)
    top_k: int = setting("show the k most probable labels", default=1)
    json: bool = setting("one JSON object per text", default=False)
    explain: bool = setting("also show the tokens that weighed most for each label (integrated gradients; needs a "
                            "run folder or model/)", default=False)
    verbose: bool = setting(VERBOSE_HELP, default=False)


@dataclass
class ServeConfig:
    """Settings of serve.py: which export, where to listen, what one request may ask."""

    model: Optional[str] = setting("run folder, SavedModel base path or version folder, or compact export "
                                   "(default: newest run)", default=None)
    output_dir: str = setting("where to look for the newest run", default="output")
    export: str = setting("which of a run's exports answers: auto (compact/ when it gives the model's answers on the "
                          "test split, as infer.py chooses; else saved_model/), saved_model, compact",
                          default="auto", meta={"choices": ["auto", "saved_model", "compact"]})
    model_name: str = setting("the NAME in /v1/models/NAME", default="tfbert")
    host: str = setting("address to bind (0.0.0.0 exposes it to the network)", default="127.0.0.1")
    port: int = setting("TCP port, 1-65535 (TF Serving's REST port is 8501)", default=8501)
    max_body_bytes: int = setting("larger requests get HTTP 413", default=4 * 1024 * 1024)
    max_batch: int = setting("most texts in one request (larger ones get HTTP 400) and in one batched model call",
                             default=256)
    batching: str = setting("on: text requests arriving together share one model call (server-side batching, as "
                            "TF Serving's --enable_batching); off: one call per request", default="on",
                            meta={"choices": ["on", "off"]})
    batch_timeout_ms: float = setting("with --batching on, how long the first request of a batch waits for others "
                                      "(TF Serving's batch_timeout_micros), 0-1000", default=5.0)
    verbose: bool = setting(VERBOSE_HELP, default=False)


def validate_infer(config: InferConfig) -> None:
    """Collect every problem with infer.py's settings and raise one error naming the flags."""
    empty = ", ".join(str(i) for i, text in enumerate(config.texts, start=1) if not text.strip())
    raise_problems([
        (config.top_k < 1, "--top_k must be at least 1"),
        (config.model and config.server, "give either --model or --server, not both"),
        (config.text_pair_column and not config.file,
         "--text_pair_column needs --file (for texts on the command line use --text_pair)"),
        (config.text_pair and len(config.text_pair) != len(config.texts),
         f"--text_pair given {len(config.text_pair)} time(s) for {len(config.texts)} text(s); "
         "give one --text_pair per positional text"),
        (empty, f"text {empty} on the command line is empty; give non-empty texts"),
    ])


def validate_serve(config: ServeConfig) -> None:
    """Collect every problem with serve.py's settings and raise one error naming the flags."""
    import re

    raise_problems([
        (not 1 <= config.port <= 65535, "--port must be in 1-65535"),  # 0 would bind a port nobody is told
        (config.max_body_bytes < 1, "--max_body_bytes must be at least 1"),
        (config.max_batch < 1, "--max_batch must be at least 1"),
        (not 0 <= config.batch_timeout_ms <= 1000, f"--batch_timeout_ms {config.batch_timeout_ms}: give 0-1000 "
         "milliseconds (5 waits a little for concurrent requests; --batching off for none)"),
        (not re.fullmatch(r"[A-Za-z0-9._-]+", config.model_name),
         f"--model_name {config.model_name!r}: use letters, digits, '.', '_' or '-' (it is part of the URL)"),
        (not config.host.strip(), "--host must not be empty (e.g. 127.0.0.1)"),
    ])


@dataclass
class EvaluateConfig:
    """Settings of evaluate.py: which model, which labelled data, where the evaluation folder goes."""

    model: Optional[str] = setting("run folder, save_pretrained folder, SavedModel or compact/ TFLite folder to "
                                 "evaluate", default=None)
    test_file: Optional[str] = setting("labelled data to score the model on (.jsonl, .json, .csv, .tsv, .parquet, or "
                                     "a folder with one subfolder per class)", default=None)
    dataset: Optional[str] = setting("a dataset preset whose test split to score the model on (instead of --test_file)",
                                   default=None)
    data_dir: Optional[str] = setting("folder or archive with the preset's original files (offline)", default=None)
    label_scheme: Optional[str] = setting("the preset's label scheme, as in training (e.g. '5' for amazon_ja)",
                                        default=None)
    text_column: str = setting("column holding the text", default="text")
    text_pair_column: Optional[str] = setting("column holding a second text (models trained on pairs)", default=None)
    label_column: str = setting("column holding the label (the model's label names, or their ids)", default="label")
    columns: Optional[str] = setting("column names of a CSV/TSV file without a header row, in order, e.g. label,text "
                                   "(_ skips a column)", default=None)
    allow_unknown_labels: bool = setting("score rows whose label the model does not know as errors (listed in "
                                       "metrics.json as unknown_labels) instead of stopping", default=False)
    output_dir: Optional[str] = setting("where the evaluation folder is created (default: <run>/evaluations/, or "
                                      "evaluations/ next to a model outside a run folder)", default=None)
    batch_size: Optional[int] = setting("texts per prediction batch (default: the predictor's own)", default=None)
    top_errors: int = setting("how many of the most confident wrong predictions to list", default=20)
    json: bool = setting("print the summary as one JSON object", default=False)
    verbose: bool = setting(VERBOSE_HELP, default=False)

    def data_config(self) -> DataConfig:
        """The column and preset settings as training's DataConfig, so the file is read exactly as training reads it."""
        return DataConfig(dataset=self.dataset, data_dir=self.data_dir, label_scheme=self.label_scheme,
                          text_column=self.text_column, text_pair_column=self.text_pair_column,
                          label_column=self.label_column, columns=self.columns)

    @property
    def data_flag(self) -> str:
        """The flag and value naming the data in messages: ``--test_file new.jsonl`` or ``--dataset ag_news``."""
        return f"--test_file {self.test_file}" if self.test_file else f"--dataset {self.dataset}"


def validate_evaluate(config: EvaluateConfig) -> None:
    """Collect every problem with evaluate.py's settings and raise one error naming the flags."""
    raise_problems([
        (not config.model, "--model is required: a run folder, its model/, a SavedModel or a compact/ folder"),
        (not config.test_file and not config.dataset, "give the labelled data: --test_file FILE or --dataset NAME"),
        (config.test_file and config.dataset, "give either --test_file or --dataset, not both"),
        ((config.data_dir or config.label_scheme) and not config.dataset, "--data_dir/--label_scheme need --dataset"),
        (config.batch_size is not None and config.batch_size < 1, "--batch_size must be at least 1"),
        (config.top_errors < 0, "--top_errors must not be negative"),
        *((True, problem) for problem in data_problems(config.data_config())),
    ])
