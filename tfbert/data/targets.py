"""Targets of multi-label and regression tasks: read from a table, and split keeping their distribution.

Multi-label data names each example's labels in one of three ways: a list (JSON Lines ``"label": ["a", "b"]``),
a delimited string (``"a,b"`` with ``--label_separator ","``), or one 0/1 column per label (``--label_columns
a,b,c``). Regression data has one numeric label column. Splits of multi-label data are made by iterative
stratification (Sechidis, Tsoumakas and Vlahavas 2011), written here because scikit-multilearn is unmaintained.

Example:
    >>> import numpy as np
    >>> label_sets(pd.Series([["a", "b"], "c"]), None, "--train_file x.jsonl", [0, 1], allow_empty=False)
    [['a', 'b'], ['c']]
    >>> multi_hot([["a", "b"], ["c"]], ["a", "b", "c"], "x", [0, 1]).tolist()
    [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
"""

from __future__ import annotations

import json
import math
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from tfbert.errors import TfbertError

TASKS = ("auto", "single_label", "multi_label", "regression")
_TRUE, _FALSE = {"1", "1.0", "true", "yes"}, {"0", "0.0", "false", "no", ""}


def _rows(row_ids: Sequence[int], mask) -> str:
    rows = [int(r) + 1 for r, bad in zip(row_ids, mask) if bad]
    return ", ".join(map(str, rows[:5])) + (" ..." if len(rows) > 5 else "")


def _is_list(value) -> bool:
    return isinstance(value, (list, tuple, np.ndarray))


def resolve_task(requested: str, labels: pd.Series, separator: Optional[str], label_columns: Optional[str],
                 label_scheme: Optional[str] = None) -> str:
    """The task a run trains: ``requested`` unless it is auto, which reads multi-label off lists in the label
    column, --label_columns or --label_separator, regression off --label_scheme stars, else single-label.

    Example:
        >>> resolve_task("auto", pd.Series([["a"], ["b", "c"]]), None, None)
        'multi_label'
    """
    if requested != "auto":
        return requested
    if label_columns or separator or labels.map(_is_list).any():
        return "multi_label"
    return "regression" if label_scheme == "stars" else "single_label"


def gather_label_columns(frame: pd.DataFrame, columns: Sequence[str], target: str, where: str) -> pd.DataFrame:
    """``frame`` with a column ``target`` holding, per row, the names of the 0/1 ``columns`` that are 1.

    Example:
        >>> frame = pd.DataFrame({"a": [1, 0], "b": ["1", "1"]})
        >>> gather_label_columns(frame, ["a", "b"], "label", "x")["label"].tolist()
        [['a', 'b'], ['b']]
    """
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise TfbertError(f"{where}: --label_columns names {', '.join(map(repr, missing))}, which the file lacks "
                          f"(columns are {', '.join(map(repr, frame.columns))})")
    flags = {}
    for column in columns:
        values = frame[column].map(lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v))
                                   else str(v).strip().lower())
        bad = ~values.isin(_TRUE | _FALSE)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise TfbertError(f"{where}: data row {row + 1}, column {column!r} holds {frame[column].iloc[row]!r}; "
                              "--label_columns wants 0 or 1 in each")
        flags[column] = values.isin(_TRUE).to_numpy()
    frame = frame.copy()
    frame[target] = [[c for c in columns if flags[c][i]] for i in range(len(frame))]
    return frame


def _one_set(value, separator: Optional[str]) -> list[str]:
    if _is_list(value):
        return [str(v).strip() for v in value if str(v).strip()]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    text = str(value).strip()
    if separator is None and text.startswith("["):  # a JSON list written into a CSV cell
        try:
            parsed = json.loads(text)
            if isinstance(parsed, list):
                return [str(v).strip() for v in parsed if str(v).strip()]
        except json.JSONDecodeError:
            pass
    parts = text.split(separator) if separator else [text]
    return [part.strip() for part in parts if part.strip()]


def label_sets(values: pd.Series, separator: Optional[str], where: str, row_ids: Sequence[int],
               allow_empty: bool) -> list[list[str]]:
    """Each row's labels, de-duplicated in their order; an empty set is refused unless ``allow_empty``."""
    sets = [list(dict.fromkeys(_one_set(value, separator))) for value in values]
    empty = [not labels for labels in sets]
    if any(empty) and not allow_empty:
        raise TfbertError(f"{where}: {sum(empty)} row(s) with an empty label set (data rows {_rows(row_ids, empty)}); "
                          "give each at least one label, or pass --allow_empty_labels if 'no label' is an answer")
    return sets


def multi_hot(sets: list[list[str]], names: list[str], where: str, row_ids: Sequence[int]) -> np.ndarray:
    """[n, len(names)] float32 0/1 rows; a label not in ``names`` is refused naming its rows."""
    index = {name: i for i, name in enumerate(names)}
    unknown = [any(label not in index for label in labels) for labels in sets]
    if any(unknown):
        bad = sorted({label for labels in sets for label in labels if label not in index})
        raise TfbertError(f"{where}: unknown label(s) {', '.join(map(repr, bad[:5]))} (data rows "
                          f"{_rows(row_ids, unknown)}); known labels are {', '.join(names)}")
    hot = np.zeros((len(sets), len(names)), np.float32)
    for row, labels in enumerate(sets):
        hot[row, [index[label] for label in labels]] = 1.0
    return hot


def numeric_targets(values: pd.Series, where: str, row_ids: Sequence[int]) -> np.ndarray:
    """The label column as float32 scores; a value that is not a finite number is refused naming its row.

    Example:
        >>> numeric_targets(pd.Series(["4", 2.5]), "x", [0, 1]).tolist()
        [4.0, 2.5]
    """
    numbers = pd.to_numeric(values.map(lambda v: str(v).strip()), errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(numbers)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise TfbertError(f"{where}: data row {int(row_ids[row]) + 1} has regression label {values.iloc[row]!r}, "
                          f"which is not a number ({int(bad.sum())} such row(s)); fix them, or use --task single_label")
    return numbers.astype(np.float32)


def iterative_stratification(y: np.ndarray, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Row indices of len(fractions) folds of multi-label rows ``y`` [n, labels] (0/1), each fold getting its
    share of every label: the rarest label's examples are dealt first, each to the fold that most wants it.

    Example:
        >>> y = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [1, 1], [1, 1]] * 5)
        >>> [len(fold) for fold in iterative_stratification(y, [0.8, 0.2], seed=0)]
        [23, 7]
    """
    rng = np.random.default_rng(seed)
    y = np.asarray(y) > 0
    n = len(y)
    fractions = np.asarray(fractions, np.float64) / np.sum(fractions)
    wanted = fractions * n  # examples each fold still wants
    wanted_per_label = np.outer(fractions, y.sum(axis=0))  # [folds, labels]
    fold_of = np.full(n, -1)
    remaining = np.ones(n, bool)
    while remaining.any():
        counts = y[remaining].sum(axis=0)
        if not counts.any():  # rows without labels: deal them to the folds short of examples
            for row in rng.permutation(np.flatnonzero(remaining)):
                fold = _pick(wanted, rng)
                fold_of[row], wanted[fold] = fold, wanted[fold] - 1
            break
        label = int(np.flatnonzero(counts == counts[counts > 0].min())[0])
        for row in rng.permutation(np.flatnonzero(remaining & y[:, label])):
            fold = _pick(wanted_per_label[:, label], rng, tie_break=wanted)
            fold_of[row] = fold
            remaining[row] = False
            wanted[fold] -= 1
            wanted_per_label[fold] -= y[row]
    return [np.flatnonzero(fold_of == fold) for fold in range(len(fractions))]


def _pick(desire: np.ndarray, rng, tie_break: Optional[np.ndarray] = None) -> int:
    """The fold with the largest ``desire``; ties go to the largest ``tie_break``, then at random."""
    best = np.flatnonzero(desire == desire.max())
    if tie_break is not None and len(best) > 1:
        best = best[tie_break[best] == tie_break[best].max()]
    return int(rng.choice(best))


def take(table: pd.DataFrame, count: int, seed: int, task: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rest, ``count`` rows) of a table whose ``label`` column holds multi-hot rows or scores: iterative
    stratification for multi-label data, stratified by score quantiles for regression."""
    if count >= len(table):
        raise TfbertError(f"cannot take {count} of {len(table)} examples; give more data or split files")
    if task == "multi_label":
        y = np.stack(table["label"].to_numpy())
        rest, taken = iterative_stratification(y, [len(table) - count, count], seed)
        rng = np.random.default_rng(seed)
        if len(taken) != count:  # the dealing may miss by a row or two: move the difference at random
            short = count - len(taken)
            moved = rng.permutation(rest if short > 0 else taken)[: abs(short)]
            taken = np.concatenate([taken, moved]) if short > 0 else np.setdiff1d(taken, moved)
            rest = np.setdiff1d(np.arange(len(table)), taken)
        return table.iloc[np.sort(rest)], table.iloc[np.sort(taken)]
    from sklearn.model_selection import train_test_split

    scores = table["label"].astype(float)
    bins = min(10, count, len(table) - count)
    strata = pd.qcut(scores.rank(method="first"), bins, labels=False) if bins >= 2 else None
    if strata is not None and strata.value_counts().min() < 2:
        strata = None
    return tuple(train_test_split(table, test_size=count, random_state=seed, stratify=strata))
