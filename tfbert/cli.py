"""What the entry points share: parsing infer.py's and serve.py's flags, logging set-up, and turning user
errors into one line and exit code 2.

Example:
    >>> parse_infer_args(["good", "bad", "--top_k", "2", "--json"]).texts
    ['good', 'bad']
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import typing
from typing import Callable, Optional

from tfbert.command_configs import (EvaluateConfig, InferConfig, ServeConfig, validate_evaluate, validate_infer,
                                    validate_serve)
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


def _parser(config_class: type, prog: str, description: str) -> argparse.ArgumentParser:
    """argparse over ``config_class``'s fields, with the flags, help and defaults HfArgumentParser gives them.

    Plain argparse, because importing transformers for its HfArgumentParser costs seconds that a one-text
    infer.py should not pay. Every field is ``--name`` (and ``--name-with-dashes``); on/off fields are plain
    switches that take no value (``infer.py --json "great phone"`` must not read the text as the switch's value).
    """
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    hints = typing.get_type_hints(config_class)
    for field in dataclasses.fields(config_class):
        if not field.init:
            continue
        flags = [f"--{field.name}"] + ([f"--{field.name.replace('_', '-')}"] if "_" in field.name else [])
        kind = hints[field.name]
        if typing.get_origin(kind) is typing.Union:  # Optional[X]
            kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
        if kind is bool:
            parser.add_argument(*flags, action="store_true", **field.metadata)
        else:
            parser.add_argument(*flags, type=kind, default=field.default, **field.metadata)
    return parser


def _parse(parser: argparse.ArgumentParser, config_class: type, argv: Optional[list[str]]):
    """``config_class`` from the parsed flags, and the namespace (holding any positional arguments)."""
    namespace = parser.parse_args(argv)  # an unknown argument: argparse's usage, one line, exit 2
    fields = [field.name for field in dataclasses.fields(config_class) if field.init]
    return config_class(**{name: getattr(namespace, name) for name in fields}), namespace


def parse_infer_args(argv: Optional[list[str]] = None) -> InferConfig:
    """Parse infer.py's command line into a validated :class:`tfbert.command_configs.InferConfig`."""
    parser = _parser(InferConfig, "infer.py", "Print each text's predicted label and confidence.")
    helps = {field.name: field.metadata["help"] for field in dataclasses.fields(InferConfig)}
    parser.add_argument("texts", nargs="*", default=[], help=helps["texts"])
    parser.add_argument("--text_pair", action="append", default=[], metavar="TEXT", help=helps["text_pair"])
    config, extra = _parse(parser, InferConfig, argv)
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
    config, _ = _parse(parser, ServeConfig, argv)
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
    config, _ = _parse(parser, EvaluateConfig, argv)
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


def exit_now(code: int) -> None:
    """Flush what was written and end the process without tearing TensorFlow down.

    A short command that loaded a model spends about a second after its last line freeing TensorFlow's
    graphs and kernels (infer.py on a MiniLM SavedModel: answer at 8.7 s, exit at 9.7 s); the operating
    system frees them at once. Only for the end of a command, when nothing is left to write.
    """
    import os

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
