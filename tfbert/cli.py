"""What the entry points share: parsing infer.py's and serve.py's flags, logging set-up, and turning user
errors into one line and exit code 2.

Example:
    >>> parse_infer_args(["good", "bad", "--top_k", "2", "--json"]).texts
    ['good', 'bad']
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from typing import Callable, Optional

from tfbert.command_configs import (EvaluateConfig, InferConfig, ServeConfig, validate_evaluate, validate_infer,
                                    validate_serve)
from tfbert.config import parse_sections
from tfbert.errors import TfbertError

# Loggers that speak at INFO about themselves ("TensorFlow version 2.x available.") rather than about the run.
_LIBRARY_LOGGERS = ("tensorflow", "absl", "h5py", "matplotlib", "urllib3", "httpx", "filelock", "fsspec",
                    "datasets", "transformers")


def setup_logging(quiet: bool = False, verbose: bool = False) -> None:
    """Log tfbert's steps at INFO (WARNING with ``quiet``); libraries log warnings only, unless ``verbose``."""
    logging.basicConfig(
        level=logging.INFO if verbose or not quiet else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not verbose:
        for name in _LIBRARY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


def _parser(config_class: type, prog: str, description: str):
    """HfArgumentParser for ``config_class``, with its on/off fields as plain switches.

    HfArgumentParser lets a bool flag take an optional value (``--json false``), which would swallow the
    positional text after it (``infer.py --json "great phone"``); here they take none.
    """
    from transformers import HfArgumentParser

    parser = HfArgumentParser(config_class, prog=prog, description=description, conflict_handler="resolve")
    for field in dataclasses.fields(config_class):
        if field.init and field.type in (bool, "bool"):
            parser.add_argument(f"--{field.name}", action="store_true", help=field.metadata["help"])
    return parser


def parse_infer_args(argv: Optional[list[str]] = None) -> InferConfig:
    """Parse infer.py's command line into a validated :class:`tfbert.command_configs.InferConfig`."""
    parser = _parser(InferConfig, "infer.py", "Print each text's predicted label and confidence.")
    helps = {field.name: field.metadata["help"] for field in dataclasses.fields(InferConfig)}
    parser.add_argument("texts", nargs="*", default=[], help=helps["texts"])
    parser.add_argument("--text_pair", action="append", default=[], metavar="TEXT", help=helps["text_pair"])
    config, extra = parse_sections(parser, argv)
    config.texts, config.text_pair = list(extra.texts), list(extra.text_pair)
    validate_infer(config)
    return config


def parse_serve_args(argv: Optional[list[str]] = None) -> ServeConfig:
    """Parse serve.py's command line into a validated :class:`tfbert.command_configs.ServeConfig`.

    Example:
        >>> parse_serve_args(["--port", "9000"]).port
        9000
    """
    parser = _parser(ServeConfig, "serve.py", "Serve a run's SavedModel over TF Serving's REST API.")
    (config,) = parse_sections(parser, argv)
    validate_serve(config)
    return config


def parse_evaluate_args(argv: Optional[list[str]] = None) -> EvaluateConfig:
    """Parse evaluate.py's command line into a validated :class:`tfbert.command_configs.EvaluateConfig`.

    Example:
        >>> parse_evaluate_args(["--model", "output/run", "--dataset", "ag_news"]).dataset
        'ag_news'
    """
    parser = _parser(EvaluateConfig, "evaluate.py", "Score a trained model on labelled data: metrics, per-class "
                     "report, confusion matrix, errors and predictions in an evaluation folder.")
    (config,) = parse_sections(parser, argv)
    validate_evaluate(config)
    return config


def run_main(main: Callable[[], int | None]) -> int:
    """Call ``main``; a TfbertError becomes ``error: <message>`` on stderr and exit code 2."""
    try:
        return main() or 0
    except TfbertError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
