"""One table of every finished run: settings, validation and test scores, the baseline, training speed.

    python -m tfbert.aggregate output/ --csv runs.csv --markdown runs.md

Rows are sorted by dataset, then test macro-F1 (best first). Failed, interrupted and running runs are
skipped and counted on stderr.

Example:
    >>> rows = collect_rows(["output"])  # doctest: +SKIP
    >>> print(markdown_table(rows))  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from tfbert.errors import TfbertError
from tfbert.runs import STATUS_FILE, read_status, safe_name

# (column, where its value is: "metrics:" or "config:" and a dotted key path, the first one present wins)
COLUMNS: list[tuple[str, tuple[str, ...]]] = [
    ("dataset", ("config:data.name", "config:settings.data.dataset")),
    ("model", ("config:settings.model.model_name",)),
    ("parameters", ("metrics:parameters", "config:resolved.parameters", "config:model.parameters")),
    ("lr", ("config:settings.training.lr",)),
    ("batch_size", ("config:settings.training.batch_size",)),
    ("epochs", ("config:settings.training.epochs",)),
    ("best_epoch", ("metrics:best_epoch",)),
    *[
        (f"{split}_{metric}", (f"metrics:{split}.{metric}",))
        for split in ("validation", "test")
        for metric in ("accuracy", "macro_precision", "macro_recall", "macro_f1")
    ],
    ("baseline_test_macro_f1", ("metrics:baseline.test.macro_f1",)),
    ("train_seconds", ("metrics:train_seconds",)),
    ("train_samples_per_second", ("metrics:train_examples_per_second",)),
    ("run", ()),
]
FIELDS = [name for name, _ in COLUMNS]
SCORE_SUFFIXES = ("accuracy", "precision", "recall", "f1")


@dataclass
class Collected:
    """The rows of the finished runs, and how many runs were left out by their status."""

    rows: list[dict] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)


def _lookup(data: dict, dotted: str) -> Any:
    value: Any = data
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def run_row(run: Path) -> dict:
    """The table row of one finished run folder (blank where a value was not recorded).

    Example:
        >>> run_row(Path("output/reviews/bert-base-uncased/20260101_120000"))["test_macro_f1"]  # doctest: +SKIP
        0.91
    """
    sources = {"metrics": _read_json(run / "metrics.json"), "config": _read_json(run / "config.json")}
    row: dict = {}
    for name, places in COLUMNS:
        row[name] = next(
            (value for place in places
             if (value := _lookup(sources[place.split(":")[0]], place.split(":", 1)[1])) is not None),
            None,
        )
    row["run"] = str(run)
    # Runs whose config lacks a name still sit under output/<dataset>/<model>/<time>/.
    row["dataset"] = row["dataset"] or run.parent.parent.name
    row["model"] = safe_name(str(row["model"])) if row["model"] else run.parent.name
    return row


def collect_rows(paths: Sequence[str | Path]) -> Collected:
    """Rows of every finished run under ``paths`` (run folders or folders holding them), sorted.

    Raises TfbertError when a path does not exist or holds no run folder at all.

    Example:
        >>> collected = collect_rows(["output"])  # doctest: +SKIP
        >>> [row["test_macro_f1"] for row in collected.rows]  # doctest: +SKIP
        [0.93, 0.91]
    """
    collected = Collected()
    seen: set[Path] = set()
    for path in map(Path, paths):
        if not path.exists():
            raise TfbertError(f"{path}: no such folder; give an output folder such as output/")
        runs = sorted(status.parent for status in path.glob(f"**/{STATUS_FILE}"))
        if not runs:
            raise TfbertError(f"{path}: no run folders (none holds {STATUS_FILE}); train one with python train.py")
        for run in runs:
            if run.resolve() in seen:  # overlapping paths (output/ and output/ag_news) count a run once
                continue
            seen.add(run.resolve())
            status = read_status(run).get("status") or "unreadable"
            if status == "finished" and (run / "metrics.json").is_file():
                collected.rows.append(run_row(run))
                continue
            if status == "finished":
                status = "finished without metrics.json"
            collected.skipped[status] = collected.skipped.get(status, 0) + 1
    collected.rows.sort(key=_order)
    return collected


def _order(row: dict) -> tuple:
    score = row["test_macro_f1"]
    return (str(row["dataset"]), score is None, -(score or 0.0), row["run"])


def _cell(name: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        # Scores to four decimals, so that columns line up; settings (lr 5e-05) and timings as they are.
        return f"{value:.4f}" if name.endswith(SCORE_SUFFIXES) else f"{value:g}"
    return str(value)


def csv_text(rows: list[dict]) -> str:
    """The rows as CSV with a header, full precision, blank cells where nothing was recorded."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({name: "" if row.get(name) is None else row[name] for name in FIELDS} for row in rows)
    return buffer.getvalue()


def markdown_table(rows: list[dict]) -> str:
    """The rows as a Markdown table, scores to four decimals.

    Example:
        >>> markdown_table([]).splitlines()[0][:24]
        '| dataset | model | para'
    """
    lines = ["| " + " | ".join(FIELDS) + " |", "|" + "|".join("---" for _ in FIELDS) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(name, row.get(name)).replace("|", "\\|") for name in FIELDS) + " |")
    return "\n".join(lines) + "\n"


def _skipped_line(skipped: dict[str, int]) -> Optional[str]:
    if not skipped:
        return None
    counts = ", ".join(f"{count} {status}" for status, count in sorted(skipped.items()))
    return f"skipped {sum(skipped.values())} run(s): {counts}"


def _write(path: str, text: str) -> None:
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as error:
        raise TfbertError(f"{path}: cannot write ({error.strerror})") from None


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tfbert.aggregate",
        description="One table of every finished run under the given folders, best test macro-F1 first per dataset.",
    )
    parser.add_argument("paths", nargs="*", default=["output"], help="output folders or run folders (default: output)")
    parser.add_argument("--csv", metavar="FILE", help="also write the table as CSV to FILE")
    parser.add_argument("--markdown", metavar="FILE", help="write the Markdown table to FILE instead of stdout")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m tfbert.aggregate [paths] [--csv FILE] [--markdown FILE]``; returns the exit code."""
    args = parse_args(argv)
    collected = collect_rows(args.paths)
    if line := _skipped_line(collected.skipped):
        print(line, file=sys.stderr)
    if not collected.rows:
        raise TfbertError(f"{', '.join(args.paths)}: no finished run; the runs there failed or are still running")
    if args.csv:
        _write(args.csv, csv_text(collected.rows))
    table = markdown_table(collected.rows)
    if args.markdown:
        _write(args.markdown, table)
    else:
        print(table, end="")
    return 0


if __name__ == "__main__":
    from tfbert.cli import run_main

    sys.exit(run_main(main))
