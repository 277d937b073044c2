"""From a preset name or local files to checked, labelled, split examples.

    source -> tables -> label names and ids -> checks -> seeded stratified splits -> overlap report

Example:
    >>> from tfbert.config import DataConfig
    >>> corpus = load_corpus(DataConfig(train_file="reviews.jsonl"), seed=42)  # doctest: +SKIP
    >>> corpus.splits["train"].features["label"].names  # doctest: +SKIP
    ['neg', 'neu', 'pos']
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import datasets
import pandas as pd

from tfbert.config import DEFAULT_DATASET, DataConfig, column_names, parse_split_ratio
from tfbert.data import targets
from tfbert.data.files import file_fingerprint, header_looks_like_data, read_table, suggest_columns
from tfbert.errors import TfbertError

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
_FLAGS = {"train": "--train_file", "validation": "--validation_file", "test": "--test_file"}


@dataclass
class Corpus:
    """Checked, split examples and a record of how they were made.

    ``splits`` has train/validation/test, each with columns text[, text_pair], label
    (ClassLabel) and row_id (the example's 0-based row in its source).
    """

    name: str
    splits: datasets.DatasetDict
    label_names: list[str]
    sources: dict[str, str]
    fingerprint: str
    split_record: dict = field(default_factory=dict)
    overlap: dict = field(default_factory=dict)
    task: str = "single_label"  # multi_label: label holds 0/1 rows; regression: label holds the score

    @property
    def has_text_pair(self) -> bool:
        return "text_pair" in self.splits["train"].column_names

    def sizes(self) -> dict[str, int]:
        return {name: len(split) for name, split in self.splits.items()}


def normalize_for_overlap(text: str) -> str:
    """The key two texts share when they count as duplicates: NFKC, case-folded, spaces collapsed."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip().casefold()


def load_corpus(config: DataConfig, seed: int) -> Corpus:
    """Load, check and split the data described by ``config``.

    Args:
        config: the data settings (preset or files, columns, labels, split ratio, dedupe).
        seed: seeds the stratified splits.
    """
    if config.train_file:
        tables, sources, fingerprint = _read_files(config)
        name = Path(config.train_file).stem
        preset_names = None
    else:
        name = config.dataset or DEFAULT_DATASET
        tables, preset_names, fingerprint = _read_preset(name, config)
        sources = {split: f"preset {name}" + (f" ({config.data_dir})" if config.data_dir else "") for split in tables}

    user_names = [n.strip() for n in config.label_names.split(",") if n.strip()] if config.label_names else None
    task = targets.resolve_task(config.task, tables["train"]["label"], config.label_separator, config.label_columns,
                                config.label_scheme)
    if task != "single_label":
        label_names = _encode_targets(tables, task, config, user_names, sources)
    else:
        label_names = _label_names(tables, user_names or preset_names)
    for split, table in tables.items():
        if task == "single_label":
            table["label"] = _label_ids(table, label_names, split, sources[split], user_names is not None)
    ids = tables["train"]["label"]
    if task == "single_label" and ids.nunique() < 2:
        raise TfbertError(
            f"{sources['train']}: the training data has a single class ({label_names[int(ids.iloc[0])]!r}); "
            "a classifier needs at least two"
        )
    tables, split_record = _make_missing_splits(tables, parse_split_ratio(config.split_ratio), seed, sources, task)
    tables, overlap = _overlap(tables, dedupe=config.dedupe)
    tables = _subsets(tables, config, seed, split_record, task)
    for split in SPLITS:
        if len(tables[split]) == 0:
            raise TfbertError(
                f"the {split} split is empty after splitting/deduplication; "
                f"give {_FLAGS[split]} or more data, or change --split_ratio"
            )
    features = {"text": datasets.Value("string")}
    if "text_pair" in tables["train"].columns:
        features["text_pair"] = datasets.Value("string")
    label_feature = {"single_label": datasets.ClassLabel(names=label_names), "regression": datasets.Value("float32"),
                     "multi_label": datasets.Sequence(datasets.Value("float32"), length=len(label_names))}[task]
    features.update(label=label_feature, row_id=datasets.Value("int64"))
    splits = datasets.DatasetDict(
        {
            split: datasets.Dataset.from_pandas(
                tables[split][list(features)], features=datasets.Features(features), preserve_index=False
            )
            for split in SPLITS
        }
    )
    return Corpus(
        name=name,
        splits=splits,
        label_names=label_names,
        sources={split: sources.get(split, f"{split} made from {sources['train']}") for split in SPLITS},
        fingerprint=fingerprint,
        split_record=split_record,
        overlap=overlap,
        task=task,
    )


def _encode_targets(tables: dict[str, pd.DataFrame], task: str, config: DataConfig, user_names: Optional[list[str]],
                    sources: dict[str, str]) -> list[str]:
    """Multi-label sets as 0/1 rows or regression scores in each table's label column; the label names."""
    where = {split: f"{_FLAGS.get(split, split)} {sources[split]}" for split in tables}
    if task == "regression":
        for split, table in tables.items():
            table["label"] = targets.numeric_targets(table["label"], where[split], table["row_id"].tolist())
        return [config.label_column]
    sets = {split: targets.label_sets(table["label"], config.label_separator, where[split], table["row_id"].tolist(),
                                      config.allow_empty_labels) for split, table in tables.items()}
    names = user_names or (config.label_columns.split(",") if config.label_columns else
                           sorted({label for labels in sets["train"] for label in labels}))
    if len(names) < 2:
        raise TfbertError(f"{sources['train']}: multi-label data needs at least two labels; it has {names}")
    for split, table in tables.items():
        table["label"] = list(targets.multi_hot(sets[split], names, where[split], table["row_id"].tolist()))
    return names


def _standard_columns(frame: pd.DataFrame, config: DataConfig, flag: str, path: str) -> pd.DataFrame:
    if config.label_columns:
        frame = targets.gather_label_columns(frame, config.label_columns.split(","), config.label_column,
                                             f"{flag} {path}")
    wanted = {"text": config.text_column, "label": config.label_column}
    if config.text_pair_column:
        wanted["text_pair"] = config.text_pair_column
    missing = [column for column in wanted.values() if column not in frame.columns]
    if missing:
        role = {v: k for k, v in wanted.items()}
        hints = ", ".join(f"--{role[c]}_column" for c in missing)
        if Path(path).suffix.lower() in (".csv", ".tsv", ".txt") and header_looks_like_data(list(frame.columns)):
            fix = suggest_columns(list(frame.columns), (config.text_column, config.label_column))
            raise TfbertError(
                f"{flag} {path}: no column {', '.join(repr(c) for c in missing)}, and the first row looks like data "
                f"({', '.join(repr(str(c)[:30]) for c in frame.columns)}), not a header; if the file has no header "
                f"row, name its columns with --columns, e.g. --columns {fix}"
            )
        raise TfbertError(
            f"{flag} {path}: no column {', '.join(repr(c) for c in missing)} "
            f"(columns are {', '.join(map(repr, frame.columns))}); set {hints}"
        )
    table = pd.DataFrame({role: frame[column] for role, column in wanted.items()})
    table["row_id"] = range(len(table))
    return _check_texts(table, f"{flag} {path}", targets_checked=bool(
        config.task in ("multi_label", "regression") or config.label_separator or config.label_columns))


def _check_texts(table: pd.DataFrame, where: str, targets_checked: bool = False) -> pd.DataFrame:
    """Refuse empty texts (and empty labels, unless the task's own parsing checks them, naming the rows)."""
    columns = ("text",) + ("label",) * (not targets_checked) + (("text_pair",) if "text_pair" in table.columns else ())
    for column in columns:
        values = table[column]
        blank = values.isna() | values.astype(str).str.strip().eq("")
        if column == "text_pair":
            table[column] = values.where(~blank, "").astype(str)
            continue
        if blank.all():
            raise TfbertError(f"{where}: column {column!r} is entirely empty; check --{column}_column")
        if blank.any():
            rows = (table.loc[blank, "row_id"] + 1).tolist()
            shown = ", ".join(map(str, rows[:5])) + (" ..." if len(rows) > 5 else "")
            raise TfbertError(
                f"{where}: {len(rows)} row(s) with an empty {column} (data rows {shown}); remove or fill them"
            )
    table["text"] = table["text"].astype(str)
    return table


def read_labelled_file(path: str, config: DataConfig, flag: str) -> pd.DataFrame:
    """One local file (or class folder) as training reads it: columns text[, text_pair], label (as written in
    the file) and row_id, chosen by --text_column/--text_pair_column/--label_column/--columns; empty texts refused.

    Example:
        >>> read_labelled_file("new.jsonl", DataConfig(), "--test_file").columns.tolist()  # doctest: +SKIP
        ['text', 'label', 'row_id']
    """
    if Path(path).is_dir():
        from tfbert.data.folders import read_class_folders

        dataset = read_class_folders(path)
        frame = dataset.to_pandas()
        frame["label"] = [dataset.features["label"].names[i] for i in frame["label"]]
    else:
        frame = read_table(path, flag=flag, columns=column_names(config.columns))
    return _standard_columns(frame, config, flag, path)


def _read_files(config: DataConfig) -> tuple[dict[str, pd.DataFrame], dict[str, str], str]:
    paths = {"train": config.train_file, "validation": config.validation_file, "test": config.test_file}
    tables, sources, digest = {}, {}, hashlib.sha256()
    for split, path in paths.items():
        if not path:
            continue
        tables[split] = read_labelled_file(path, config, _FLAGS[split])
        sources[split] = str(path)
        digest.update(f"{split}:{file_fingerprint(path)};".encode())
    return tables, sources, digest.hexdigest()


def _read_preset(name: str, config: DataConfig) -> tuple[dict[str, pd.DataFrame], list[str], str]:
    from tfbert.data.presets import load_preset

    dataset_dict = load_preset(name, data_dir=config.data_dir, label_scheme=config.label_scheme)
    tables, digest = {}, hashlib.sha256()
    names: list[str] = []
    for split, dataset in dataset_dict.items():
        if split not in SPLITS:
            continue
        names = dataset.features["label"].names
        frame = dataset.to_pandas()
        frame["label"] = [names[i] for i in frame["label"]]
        frame["row_id"] = range(len(frame))
        columns = ["text", "label", "row_id"] + (["text_pair"] if "text_pair" in frame.columns else [])
        tables[split] = _check_texts(frame[columns].copy(), f"--dataset {name} ({split})")
        digest.update(f"{split}:{dataset._fingerprint};".encode())
    if "train" not in tables:
        raise TfbertError(f"--dataset {name}: the preset has no train split")
    return tables, names, digest.hexdigest()


def _is_int(value) -> bool:
    try:
        int(str(value))
        return str(int(str(value))) == str(value).strip()
    except ValueError:
        return False


def _label_names(tables: dict[str, pd.DataFrame], given: Optional[list[str]]) -> list[str]:
    if given:
        return list(given)
    seen = sorted({str(v).strip() for v in tables["train"]["label"]})
    if all(_is_int(v) for v in seen):
        seen.sort(key=int)
    return seen


def _label_ids(table: pd.DataFrame, names: list[str], split: str, source: str, names_from_user: bool) -> pd.Series:
    index = {name: i for i, name in enumerate(names)}
    values = table["label"].map(lambda v: str(v).strip())
    # --label_names neg,neu,pos over integer labels 0..2 means "label i is names[i]".
    if names_from_user and not values.isin(index).any() and values.map(_is_int).all():
        as_int = values.astype(int)
        if as_int.between(0, len(names) - 1).all():
            return as_int
    unknown = ~values.isin(index)
    if unknown.any():
        bad = sorted(set(values[unknown]))
        rows = (table.loc[unknown, "row_id"] + 1).tolist()[:5]
        if split == "train":
            fix = "add it to --label_names or fix the rows"
        else:
            fix = "training never saw it; add training examples of it or remove those rows"
        raise TfbertError(
            f"{_FLAGS.get(split, split)} {source}: unknown label(s) {', '.join(map(repr, bad[:5]))} "
            f"(data rows {', '.join(map(str, rows))}); known labels are {', '.join(names)}; {fix}"
        )
    return values.map(index).astype(int)


def _stratified_take(table: pd.DataFrame, count: int, seed: int,
                     task: str = "single_label") -> tuple[pd.DataFrame, pd.DataFrame]:
    from sklearn.model_selection import train_test_split

    if task != "single_label":
        return targets.take(table, count, seed, task)
    counts = table["label"].value_counts()
    stratify = table["label"] if counts.min() >= 2 and count >= len(counts) else None
    try:
        kept, taken = train_test_split(table, test_size=count, random_state=seed, stratify=stratify)
    except ValueError as error:
        raise TfbertError(f"cannot split {len(table)} examples: {error}; give more data or split files") from None
    return kept, taken


def _make_missing_splits(
    tables: dict[str, pd.DataFrame], fractions: tuple[float, float, float], seed: int, sources: dict[str, str],
    task: str = "single_label") -> tuple[dict[str, pd.DataFrame], dict]:
    """Carve the splits not given as files out of train, in whole examples: round(share x train size)."""
    shares = dict(zip(SPLITS, fractions))
    record: dict = {"seed": seed, "ratio": list(fractions), "made": {}}
    train = tables["train"]
    missing = [split for split in ("test", "validation") if split not in tables]
    pool_share = shares["train"] + sum(shares[split] for split in missing)
    total = len(train)
    for split in missing:
        count = round(total * shares[split] / pool_share)
        if count < 1:
            raise TfbertError(f"no {split} data: give {_FLAGS[split]} or a larger share in --split_ratio")
        train, tables[split] = _stratified_take(train, count, seed, task)
        how = "iteratively stratified" if task == "multi_label" else "stratified"
        record["made"][split] = f"{how} {count} of {total} rows of {sources['train']}"
    tables["train"] = train
    record["rows"] = {split: sorted(int(r) for r in tables[split]["row_id"]) for split in SPLITS}
    return tables, record


def _subsets(tables: dict[str, pd.DataFrame], config: DataConfig, seed: int, record: dict,
             task: str = "single_label") -> dict[str, pd.DataFrame]:
    """--max_train_samples / --max_eval_samples: a seeded stratified subset of each split, taken after splitting
    so that the splits stay the same whatever the subset size; ``record`` gets the rows kept."""
    limits = {"train": config.max_train_samples, "validation": config.max_eval_samples,
              "test": config.max_eval_samples}
    for split, limit in limits.items():
        if limit is not None and len(tables[split]) > limit:
            record.setdefault("subset", {})[split] = f"stratified {limit} of {len(tables[split])} rows"
            tables[split] = _stratified_take(tables[split], limit, seed, task)[1]
            record["rows"][split] = sorted(int(r) for r in tables[split]["row_id"])
    return tables


def _overlap(tables: dict[str, pd.DataFrame], dedupe: bool) -> tuple[dict[str, pd.DataFrame], dict]:
    """Count duplicates within train and texts shared across splits; with dedupe, drop them from the later split."""
    def keys(table: pd.DataFrame) -> pd.Series:
        text = table["text"]
        if "text_pair" in table.columns:
            text = text + "\x1f" + table["text_pair"]
        return text.map(normalize_for_overlap)

    report: dict = {}
    seen: set[str] = set()
    for split in SPLITS:
        table = tables[split]
        key = keys(table)
        duplicated_within = key.duplicated()
        in_earlier = key.isin(seen)
        report[f"{split}_duplicates"] = int(duplicated_within.sum())
        if split != "train":
            report[f"{split}_in_earlier_splits"] = int(in_earlier.sum())
        if dedupe:
            drop = duplicated_within | in_earlier
            tables[split] = table[~drop.to_numpy()]
            report[f"{split}_removed"] = int(drop.sum())
        seen.update(key)
    report["deduplicated"] = dedupe
    return tables, report
