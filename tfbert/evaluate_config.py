"""Typed settings of evaluate.py and their validation (beside config.py, which holds train.py's and is full).

Example:
    >>> from tfbert.cli import parse_evaluate_args
    >>> parse_evaluate_args(["--model", "output/run", "--test_file", "new.jsonl"]).test_file
    'new.jsonl'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from tfbert.config import VERBOSE_HELP, DataConfig, _data_problems, _help, _raise_problems


@dataclass
class EvaluateConfig:
    """Settings of evaluate.py: which model, which labelled data, where the evaluation folder goes."""

    model: Optional[str] = _help("run folder, save_pretrained folder, SavedModel or compact/ TFLite folder to "
                                 "evaluate", default=None)
    test_file: Optional[str] = _help("labelled data to score the model on (.jsonl, .json, .csv, .tsv, .parquet, or "
                                     "a folder with one subfolder per class)", default=None)
    dataset: Optional[str] = _help("a dataset preset whose test split to score the model on (instead of --test_file)",
                                   default=None)
    data_dir: Optional[str] = _help("folder or archive with the preset's original files (offline)", default=None)
    label_scheme: Optional[str] = _help("the preset's label scheme, as in training (e.g. '5' for amazon_ja)",
                                        default=None)
    text_column: str = _help("column holding the text", default="text")
    text_pair_column: Optional[str] = _help("column holding a second text (models trained on pairs)", default=None)
    label_column: str = _help("column holding the label (the model's label names, or their ids)", default="label")
    columns: Optional[str] = _help("column names of a CSV/TSV file without a header row, in order, e.g. label,text "
                                   "(_ skips a column)", default=None)
    allow_unknown_labels: bool = _help("score rows whose label the model does not know as errors (listed in "
                                       "metrics.json as unknown_labels) instead of stopping", default=False)
    output_dir: Optional[str] = _help("where the evaluation folder is created (default: <run>/evaluations/, or "
                                      "evaluations/ next to a model outside a run folder)", default=None)
    batch_size: Optional[int] = _help("texts per prediction batch (default: the predictor's own)", default=None)
    top_errors: int = _help("how many of the most confident wrong predictions to list", default=20)
    json: bool = _help("print the summary as one JSON object", default=False)
    verbose: bool = _help(VERBOSE_HELP, default=False)

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
    _raise_problems([
        (not config.model, "--model is required: a run folder, its model/, a SavedModel or a compact/ folder"),
        (not config.test_file and not config.dataset, "give the labelled data: --test_file FILE or --dataset NAME"),
        (config.test_file and config.dataset, "give either --test_file or --dataset, not both"),
        ((config.data_dir or config.label_scheme) and not config.dataset, "--data_dir/--label_scheme need --dataset"),
        (config.batch_size is not None and config.batch_size < 1, "--batch_size must be at least 1"),
        (config.top_errors < 0, "--top_errors must not be negative"),
        *((True, problem) for problem in _data_problems(config.data_config())),
    ])
