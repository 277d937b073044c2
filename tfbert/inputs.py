"""The texts infer.py classifies: from the command line or a --file, checked before a model loads, with their
pairs for models trained on text pairs.

Example:
    >>> from tfbert.cli import parse_infer_args
    >>> collect_inputs(parse_infer_args(["a title", "--text_pair", "its body"]))
    (['a title'], ['its body'])
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

from tfbert.command_configs import InferConfig
from tfbert.errors import TfbertError

logger = logging.getLogger(__name__)


def collect_inputs(config: InferConfig) -> tuple[list[str], Optional[list[str]]]:
    """Texts (positional, then --file) and their pairs (--text_pair, --text_pair_column), or None for no pairs."""
    texts, pairs = list(config.texts), list(config.text_pair)
    if config.file:
        file_texts, file_pairs = read_text_file(config.file, config.text_column, config.text_pair_column)
        texts += file_texts
        pairs += file_pairs or []
        if file_texts and config.texts and bool(file_pairs) != bool(config.text_pair):
            raise TfbertError("pairs for some texts only: give --text_pair for every positional text and "
                              "--text_pair_column for the --file, or neither")
    if not texts:
        raise TfbertError("no texts: give them as arguments (python infer.py \"some text\") or with --file")
    return texts, (pairs or None)


def read_text_file(path: str, text_column: str = "text",
                   pair_column: Optional[str] = None) -> tuple[list[str], Optional[list[str]]]:
    """Texts (and pairs) of --file: .jsonl/.ndjson records, .csv/.tsv with a header row, else one text a line.

    Blank lines of a plain text file separate texts; in JSON Lines and CSV/TSV an empty line or text is an error,
    as in training data.

    Example:
        >>> read_text_file("texts.jsonl", "body")  # doctest: +SKIP
        (['good item', 'bad phone'], None)
    """
    file = Path(path)
    if not file.is_file():
        raise TfbertError(f"--file {path}: no such file; check the path")
    suffix = file.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return _read_table(file, path, text_column, pair_column)
    if pair_column and suffix not in (".jsonl", ".ndjson"):
        raise TfbertError(f"--text_pair_column needs a .jsonl, .csv or .tsv --file; {path} is plain text")
    try:
        lines = file.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise TfbertError(f"--file {path}: not UTF-8; re-save the file as UTF-8") from None
    if suffix not in (".jsonl", ".ndjson"):
        return [line for line in lines if line.strip()], None
    while lines and not lines[-1].strip():  # blank lines at the very end are only the file's ending
        lines.pop()
    records = [_record(line, number, path, text_column, pair_column) for number, line in enumerate(lines, start=1)]
    texts = [record[0] for record in records]
    return texts, ([record[1] for record in records] if pair_column else None)


def _record(line: str, number: int, path: str, text_column: str, pair_column: Optional[str]) -> tuple[str, str]:
    if not line.strip():
        raise TfbertError(f"--file {path}: line {number} is empty; remove it (one JSON object per line)")
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        raise TfbertError(f"--file {path}: line {number} is not valid JSON") from None
    for column, flag in ((text_column, "--text_column"), (pair_column, "--text_pair_column")):
        if column and (not isinstance(record, dict) or column not in record):
            raise TfbertError(f"--file {path}: line {number} has no {column!r} field; set {flag}")
    text = str(record[text_column])
    if not text.strip():
        raise TfbertError(f"--file {path}: line {number} has an empty {text_column!r}; remove or fill it")
    return text, (str(record[pair_column] or "") if pair_column else "")


def _read_table(file: Path, path: str, text_column: str, pair_column: Optional[str]):
    from tfbert.data.files import read_table

    frame = read_table(file, flag="--file")
    for column, flag in ((text_column, "--text_column"), (pair_column, "--text_pair_column")):
        if column and column not in frame.columns:
            raise TfbertError(f"--file {path}: no column {column!r} (columns are "
                              f"{', '.join(map(repr, frame.columns))}); set {flag}")
    texts = frame[text_column].astype(str).tolist()
    empty = [str(i + 2) for i, text in enumerate(texts) if not text.strip()]  # +2: 1-based, after the header
    if empty:
        raise TfbertError(f"--file {path}: empty {text_column!r} on line(s) {', '.join(empty[:5])}; remove or fill them")
    return texts, (frame[pair_column].astype(str).tolist() if pair_column else None)


def trained_with_pairs(model_path: Path) -> Optional[bool]:
    """Whether the model at ``model_path`` (a run folder, model/, saved_model/[<v>/] or compact/, also copied away
    from its run) reads text pairs: from its recorded settings, else from its run's config.json (folders written
    before the settings recorded it); None when neither says."""
    from tfbert.model_settings import find_settings

    recorded = find_settings(model_path)
    if recorded is not None and recorded.text_pairs is not None:
        return recorded.text_pairs
    for folder in (model_path, *list(model_path.resolve().parents)[:3]):
        record = folder / "config.json"
        try:
            config = json.loads(record.read_text(encoding="utf-8")) if record.is_file() else {}
        except ValueError:
            continue
        if "settings" in config:
            data = config.get("data", {})
            if "text_pair" in data:
                return bool(data["text_pair"])
            return True if config["settings"].get("data", {}).get("text_pair_column") else None
    return None


def check_pairs(model_path: Optional[Path], pairs: Optional[list[str]]) -> None:
    """Refuse pairs for a model trained on single texts; warn when a pair model gets none."""
    trained = trained_with_pairs(model_path) if model_path is not None else None
    if trained is False and pairs is not None:
        raise TfbertError(f"--text_pair/--text_pair_column: the model {model_path} was trained on single texts; "
                          "leave the pairs out")
    if trained and pairs is None:
        logger.warning("the model %s was trained on text pairs; without --text_pair/--text_pair_column it "
                       "sees the first text only and may answer worse", model_path)
