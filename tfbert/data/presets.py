"""Named datasets: one small declarative entry each, read from the Hub or, offline, from their original files.

Example:
    >>> from tfbert.data.presets import load_preset
    >>> splits = load_preset("sms_spam", data_dir="../shared/data/sms_spam")  # doctest: +SKIP
    >>> splits["train"].features["label"].names  # doctest: +SKIP
    ['ham', 'spam']
"""

from __future__ import annotations

import csv
import json
import logging
import tarfile
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import datasets

from tfbert.errors import TfbertError

logger = logging.getLogger(__name__)

BUNDLED = Path(__file__).resolve().parent / "bundled"
Rows = dict[str, list[dict]]  # split -> [{"text", ["text_pair"], "label": name}]


@dataclass(frozen=True)
class Preset:
    """A named dataset: where it lives, how its files read, what its labels are."""

    name: str
    description: str
    label_names: tuple[str, ...]
    hub_id: Optional[str] = None
    hub_text: str = "text"
    hub_label: str = "label"
    read_local: Optional[Callable[[Path], Rows]] = None
    expected: str = ""  # what --data_dir must hold, for error messages
    schemes: dict = field(default_factory=dict)  # --label_scheme -> (names, star->name mapping)


def _missing(preset: str, path: Path, expected: str) -> TfbertError:
    return TfbertError(f"--data_dir {path}: no {expected} found for --dataset {preset}; point it at the folder that holds them")


def _read_demo(_: Path) -> Rows:
    lines = (BUNDLED / "reviews_en.jsonl").read_text(encoding="utf-8").splitlines()
    return {"train": [json.loads(line) for line in lines if line.strip()]}


def _read_sms(path: Path) -> Rows:
    file = path / "SMSSpamCollection" if path.is_dir() else path
    if not file.is_file():
        raise _missing("sms_spam", path, "SMSSpamCollection file")
    rows = []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        label, sep, text = line.partition("\t")
        if not sep or label not in ("ham", "spam"):
            raise TfbertError(f"--data_dir {file}: line {number} is not 'ham|spam<TAB>text'")
        rows.append({"text": text, "label": label})
    return {"train": rows}


AG_NEWS_CLASSES = ("World", "Sports", "Business", "Sci/Tech")


def _read_ag_news(path: Path) -> Rows:
    splits = {}
    for split in ("train", "test"):
        file = path / f"{split}.csv"
        if not file.is_file():
            continue
        rows = []
        with open(file, newline="", encoding="utf-8") as f:
            for number, record in enumerate(csv.reader(f), start=1):
                if len(record) != 3 or not record[0].isdigit() or not 1 <= int(record[0]) <= 4:
                    raise TfbertError(f"--data_dir {file}: row {number} is not class(1-4),title,description")
                title, description = (part.replace("\\n", " ").replace("\\", " ").strip() for part in record[1:])
                rows.append({"text": f"{title}. {description}", "label": AG_NEWS_CLASSES[int(record[0]) - 1]})
        splits[split] = rows
    if "train" not in splits and "test" in splits:
        splits = {"train": splits["test"]}  # only the test CSV: it becomes the pool the splits are made from
    if not splits:
        raise _missing("ag_news", path, "train.csv or test.csv")
    return splits


def _read_imdb(path: Path) -> Rows:
    root = path / "aclImdb" if (path / "aclImdb").is_dir() else path
    splits = {}
    for split in ("train", "test"):
        rows = []
        for label in ("neg", "pos"):
            for file in sorted((root / split / label).glob("*.txt")):
                rows.append({"text": file.read_text(encoding="utf-8").replace("<br />", "\n"), "label": label})
        if rows:
            splits[split] = rows
    if "train" not in splits:
        raise _missing("imdb", path, "aclImdb/train/{pos,neg}/*.txt")
    return splits


LIVEDOOR_CATEGORIES = ("dokujo-tsushin", "it-life-hack", "kaden-channel", "livedoor-homme", "movie-enter",
                       "peachy", "smax", "sports-watch", "topic-news")


def _livedoor_article(text: str) -> Optional[dict]:
    lines = text.splitlines()
    if len(lines) < 3:
        return None
    title = unicodedata.normalize("NFKC", lines[2]).strip()
    body = unicodedata.normalize("NFKC", "\n".join(lines[3:])).strip()
    return {"text": title, "text_pair": body}


def _read_livedoor(path: Path) -> Rows:
    rows = []
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(path) as archive:
            for member in archive.getmembers():
                parts = Path(member.name).parts
                if member.isfile() and len(parts) >= 2 and parts[-2] in LIVEDOOR_CATEGORIES \
                        and parts[-1].endswith(".txt") and parts[-1] != "LICENSE.txt":
                    article = _livedoor_article(archive.extractfile(member).read().decode("utf-8"))
                    if article:
                        rows.append({**article, "label": parts[-2], "_key": member.name})
        rows.sort(key=lambda row: row.pop("_key"))
    else:
        root = path / "text" if (path / "text").is_dir() else path
        found = [c for c in LIVEDOOR_CATEGORIES if (root / c).is_dir()]
        if not found:
            raise _missing("livedoor", path, "category folders (dokujo-tsushin/, it-life-hack/, ...) or ldcc-20140209.tar.gz")
        for category in found:
            for file in sorted((root / category).glob("*.txt")):
                if file.name != "LICENSE.txt":
                    article = _livedoor_article(file.read_text(encoding="utf-8"))
                    if article:
                        rows.append({**article, "label": category})
    if not rows:
        raise _missing("livedoor", path, "articles")
    return {"train": rows}


AMAZON_STARS_3 = {0: "neg", 1: "neg", 2: "neu", 3: "pos", 4: "pos"}  # label 0-4 = stars 1-5
AMAZON_STARS_5 = {i: f"{i + 1}_star" for i in range(5)}
AMAZON_STARS = {i: str(i + 1) for i in range(5)}


def _read_amazon(path: Path) -> Rows:
    splits = {}
    for split in ("train", "validation", "test"):
        for suffix in (".jsonl", ".json", ".csv", ".parquet"):
            file = path / f"{split}{suffix}"
            if file.is_file():
                from tfbert.data.files import read_table

                frame = read_table(file, flag="--data_dir")
                splits[split] = [{"text": str(t), "label": int(l)} for t, l in zip(frame["text"], frame["label"])]
                break
    if "train" not in splits:
        raise _missing("amazon_ja", path, "train.jsonl/.csv/.parquet (columns text, label 0-4)")
    return splits


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset("demo_reviews", "1,200 synthetic English product reviews (bundled)", ("neg", "neu", "pos"),
               read_local=_read_demo),
        Preset("amazon_ja", "Amazon reviews, Japanese: stars 1-2 neg, 3 neu, 4-5 pos", ("neg", "neu", "pos"),
               hub_id="SetFit/amazon_reviews_multi_ja", read_local=_read_amazon, expected="train/validation/test files",
               schemes={"3": (("neg", "neu", "pos"), AMAZON_STARS_3),
                        "5": (tuple(AMAZON_STARS_5.values()), AMAZON_STARS_5),
                        "stars": (tuple(AMAZON_STARS.values()), AMAZON_STARS)}),  # 1-5 as a score (--task regression)
        Preset("livedoor", "livedoor news corpus, 9 categories, title + body", LIVEDOOR_CATEGORIES,
               read_local=_read_livedoor),
        Preset("ag_news", "AG News, 4 topics", AG_NEWS_CLASSES, hub_id="ag_news", read_local=_read_ag_news),
        Preset("imdb", "IMDb movie reviews, pos/neg", ("neg", "pos"), hub_id="imdb", read_local=_read_imdb),
        Preset("sms_spam", "SMS Spam Collection, ham/spam", ("ham", "spam"), hub_id="sms_spam",
               hub_text="sms", read_local=_read_sms),
    )
}


def preset_names() -> list[str]:
    return sorted(PRESETS)


def _from_hub(preset: Preset) -> Rows:
    try:
        loaded = datasets.load_dataset(preset.hub_id)
    except Exception as error:  # offline, renamed, gated: the user's way out is the same
        reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise TfbertError(
            f"--dataset {preset.name}: cannot load {preset.hub_id} from the Hugging Face Hub ({reason}); "
            f"offline, pass --data_dir with the original files"
        ) from None
    splits = {}
    for split, dataset in loaded.items():
        feature = dataset.features.get(preset.hub_label)
        names = feature.names if isinstance(feature, datasets.ClassLabel) else None
        splits[split] = [
            {"text": text, "label": names[label] if names and preset.name != "amazon_ja" else label}
            for text, label in zip(dataset[preset.hub_text], dataset[preset.hub_label])
        ]
    return splits


def load_preset(name: str, data_dir: Optional[str] = None, label_scheme: Optional[str] = None) -> datasets.DatasetDict:
    """The preset's official splits with columns text[, text_pair] and label (ClassLabel).

    Args:
        name: a preset name (see :func:`preset_names`).
        data_dir: a folder (or archive) with the original files; without it the Hub is used.
        label_scheme: e.g. ``"5"`` keeps amazon_ja's five star classes.
    """
    preset = PRESETS.get(name)
    if preset is None:
        raise TfbertError(f"--dataset {name}: unknown preset; known presets are {', '.join(preset_names())}")
    if data_dir:
        path = Path(data_dir)
        if not path.exists():
            raise TfbertError(f"--data_dir {path}: no such file or folder")
        rows = preset.read_local(path)
    elif preset.hub_id is None:
        rows = preset.read_local(BUNDLED)
    else:
        rows = _from_hub(preset)
    names = preset.label_names
    mapping = None
    if preset.schemes:
        names, mapping = preset.schemes[label_scheme or "3"] if (label_scheme or "3") in preset.schemes else (None, None)
        if names is None:
            raise TfbertError(f"--label_scheme {label_scheme}: {name} offers {', '.join(preset.schemes)}")
    elif label_scheme:
        raise TfbertError(f"--label_scheme: {name} has a single label scheme; drop the flag")
    features = {"text": datasets.Value("string")}
    if any("text_pair" in row for split in rows.values() for row in split[:1]):
        features["text_pair"] = datasets.Value("string")
    features["label"] = datasets.ClassLabel(names=list(names))
    result = {}
    for split, split_rows in rows.items():
        labels = [row["label"] for row in split_rows]
        if mapping:
            bad = [i for i, label in enumerate(labels) if label not in mapping]
            if bad:
                raise TfbertError(f"--dataset {name} ({split}): row {bad[0] + 1} has label {labels[bad[0]]!r}; "
                                  f"expected one of {', '.join(map(str, mapping))}")
            labels = [mapping[label] for label in labels]
        unknown = sorted({str(label) for label in labels} - set(names))
        if unknown:
            raise TfbertError(f"--dataset {name} ({split}): unknown label(s) {', '.join(unknown[:5])}; expected {', '.join(names)}")
        columns = {key: [row[key] for row in split_rows] for key in features if key != "label"}
        columns["label"] = [names.index(label) for label in labels]
        result[split] = datasets.Dataset.from_dict(columns, features=datasets.Features(features))
    return datasets.DatasetDict(result)
