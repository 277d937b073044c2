"""Read a user's local table (JSON Lines, JSON, CSV, TSV, Parquet) into a pandas DataFrame.

Every failure is a :class:`TfbertError` naming the flag, the file, the row where known, and a fix.

Example:
    >>> from tfbert.data.files import read_table
    >>> frame = read_table("reviews.csv", flag="--train_file")  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from pathlib import Path
from typing import Optional

import pandas as pd

from tfbert.errors import TfbertError

READERS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".parquet": "parquet"}


def file_fingerprint(path: str | Path) -> str:
    """SHA-256 of a file's bytes, or of a folder's files' names and bytes."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with open(file, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _decode_utf8(raw: bytes, path: Path, flag: str) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise TfbertError(
            f"{flag} {path}: not UTF-8 (byte 0x{raw[error.start]:02x} at line {line}); "
            "re-save the file as UTF-8, e.g. iconv -f SHIFT_JIS -t UTF-8"
        ) from None


def read_table(path: str | Path, flag: str = "--train_file", columns: Optional[list[str]] = None) -> pd.DataFrame:
    """Read one local data file; the format follows its extension.

    Args:
        path: a .jsonl/.ndjson, .json (records), .csv, .tsv/.txt (tab-separated, header row) or .parquet file.
        flag: the command-line flag the path came from, named in error messages.
        columns: names of the columns of a CSV/TSV file without a header row (--columns); "_" drops a column.

    Returns:
        A DataFrame with the file's columns, one row per example, in file order.
    """
    path = Path(path)
    if not path.exists():
        raise TfbertError(f"{flag} {path}: no such file; check the path")
    if path.is_dir():
        raise TfbertError(f"{flag} {path}: is a folder; give a .jsonl, .csv, .tsv or .parquet file")
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        raise TfbertError(
            f"{flag} {path}: unknown file type {path.suffix!r}; use one of {', '.join(sorted(READERS))}"
        )
    if columns and kind not in ("csv", "tsv"):
        raise TfbertError(f"--columns: {flag} {path} is {kind}, which names its own fields; "
                          "--columns is for CSV/TSV files without a header row")
    if path.stat().st_size == 0:
        raise TfbertError(f"{flag} {path}: the file is empty; it needs a header/records with text and label")
    try:
        if kind == "parquet":
            frame = pd.read_parquet(path)
        else:
            text = _decode_utf8(path.read_bytes(), path, flag)
            frame = _parse_text(text, kind, path, flag, columns)
    except TfbertError:
        raise
    except Exception as error:  # pandas/pyarrow parse errors carry the detail we pass on
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TfbertError(f"{flag} {path}: cannot be read as {kind}: {detail}") from None
    if len(frame) == 0:
        raise TfbertError(f"{flag} {path}: no rows; the file has no examples")
    return frame


def _parse_text(text: str, kind: str, path: Path, flag: str, columns: Optional[list[str]] = None) -> pd.DataFrame:
    if kind == "jsonl":
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise TfbertError(
                    f"{flag} {path}: line {number} is not valid JSON ({error.msg}); one JSON object per line"
                ) from None
            if not isinstance(record, dict):
                raise TfbertError(f"{flag} {path}: line {number} is not a JSON object; one object per line")
            records.append(record)
        return pd.DataFrame.from_records(records)
    if kind == "json":
        data = json.loads(text)
        if isinstance(data, dict) and "data" in data:
            data = data["data"]
        if not isinstance(data, list):
            raise TfbertError(f"{flag} {path}: expected a JSON list of records (or use .jsonl)")
        return pd.DataFrame.from_records(data)
    return _read_delimited(text, "\t" if kind == "tsv" else ",", path, flag, columns)


def _read_delimited(text: str, separator: str, path: Path, flag: str, columns: Optional[list[str]]) -> pd.DataFrame:
    """CSV/TSV with a header row, or named by ``columns``; a trailing delimiter on each row is ignored.

    Every field stays a string ("001" is a label, not 1); quoted fields may hold delimiters and newlines.
    """
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=separator)
    rows = [(reader.line_num, _without_trailing_empty(row)) for row in reader if any(field.strip() for field in row)]
    if not rows:
        return pd.DataFrame()
    names = columns or _unique(rows.pop(0)[1])
    width = max((len(row) for _, row in rows), default=0)
    if columns and len(columns) != width:
        raise TfbertError(f"--columns {','.join(columns)}: names {len(columns)} column(s) but {flag} {path} has "
                          f"{width}; give one name per column (_ skips one)")
    for line, row in rows:
        if len(row) > len(names):  # an unquoted delimiter inside a text would shift every later field
            raise TfbertError(f"{flag} {path}: line {line} has {len(row)} fields, the header {len(names)}; "
                              "quote fields that contain the delimiter")
    frame = pd.DataFrame([row + [""] * (len(names) - len(row)) for _, row in rows], columns=names, dtype=str)
    return frame[[name for name in names if name != "_"]] if columns else frame


def _without_trailing_empty(row: list[str]) -> list[str]:
    while len(row) > 1 and not row[-1].strip():
        row = row[:-1]
    return row


def _unique(names: list[str]) -> list[str]:
    """Header names made unique as pandas does: a, a.1, a.2."""
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        unique.append(f"{name}.{seen[name]}" if name in seen else name)
        seen[name] = seen.get(name, 0) + 1
    return unique


def header_looks_like_data(names: list) -> bool:
    """Whether a header row reads like an example: a name that is a bare number or a long sentence.

    Example:
        >>> header_looks_like_data(["1", "This phone broke after two days of normal use"])
        True
        >>> header_looks_like_data(["text", "label"])
        False
    """
    def like_data(name: str) -> bool:
        return bool(re.fullmatch(r"-?\d+(\.\d+)?", name)) or len(name) > 30 or len(name.split()) >= 4

    return any(like_data(str(name).strip()) for name in names)


def suggest_columns(names: list, wanted: tuple[str, ...] = ("text", "label")) -> str:
    """A --columns value for a headerless file whose first row is ``names``: the longest field is the text,
    the first short one the label, the rest skipped.

    Example:
        >>> suggest_columns(["2", "Great value, works perfectly"])
        'label,text'
    """
    values = [str(name) for name in names]
    text_at = max(range(len(values)), key=lambda i: len(values[i]))
    label_at = next((i for i in range(len(values)) if i != text_at), None)
    roles = ["_"] * len(values)
    roles[text_at] = wanted[0]
    if label_at is not None:
        roles[label_at] = wanted[1]
    return ",".join(roles)
