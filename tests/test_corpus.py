import pytest
from conftest import make_rows, write_jsonl

from tfbert.config import DataConfig
from tfbert.data.corpus import load_corpus, normalize_for_overlap
from tfbert.errors import TfbertError


def test_seeded_stratified_splits_are_recorded(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", make_rows(300))
    corpus = load_corpus(DataConfig(train_file=str(path)), seed=7)
    assert corpus.sizes() == {"train": 240, "validation": 30, "test": 30}
    assert corpus.label_names == ["neg", "neu", "pos"]
    for split in ("validation", "test"):  # stratified: 10 of each class
        assert sorted(corpus.splits[split]["label"]) == [0] * 10 + [1] * 10 + [2] * 10
    rows = corpus.split_record["rows"]
    assert sorted(rows["train"] + rows["validation"] + rows["test"]) == list(range(300))
    again = load_corpus(DataConfig(train_file=str(path)), seed=7)
    assert again.split_record["rows"] == rows
    other = load_corpus(DataConfig(train_file=str(path)), seed=8)
    assert other.split_record["rows"]["test"] != rows["test"]


def test_given_files_are_used_as_they_are(tmp_path):
    rows = make_rows(120)
    train = write_jsonl(tmp_path / "train.jsonl", rows[:80])
    test = write_jsonl(tmp_path / "test.jsonl", rows[80:])
    corpus = load_corpus(DataConfig(train_file=str(train), test_file=str(test), split_ratio="8:2:0"), seed=1)
    assert corpus.sizes() == {"train": 64, "validation": 16, "test": 40}
    assert corpus.splits["test"]["text"] == [r["text"] for r in rows[80:]]


def test_integer_labels_and_label_names(tmp_path):
    rows = [{"text": f"text {i}", "label": i % 3} for i in range(60)]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    assert load_corpus(DataConfig(train_file=str(path)), seed=0).label_names == ["0", "1", "2"]
    named = load_corpus(DataConfig(train_file=str(path), label_names="neg,neu,pos"), seed=0)
    assert named.label_names == ["neg", "neu", "pos"]
    train = named.splits["train"]
    assert all(int(text.split()[1]) % 3 == label for text, label in zip(train["text"], train["label"]))


def test_overlap_is_counted_and_deduplicated(tmp_path):
    rows = make_rows(60)
    train = write_jsonl(tmp_path / "train.jsonl", rows + [dict(rows[0]), dict(rows[1])])
    test_rows = [{"text": rows[2]["text"].upper() + "  ", "label": rows[2]["label"]}] + make_rows(30, seed=5)
    test = write_jsonl(tmp_path / "test.jsonl", test_rows)
    config = DataConfig(train_file=str(train), test_file=str(test), split_ratio="9:1:0")
    counted = load_corpus(config, seed=0)
    assert counted.overlap["train_duplicates"] >= 1
    assert counted.overlap["test_in_earlier_splits"] >= 1
    config.dedupe = True
    deduped = load_corpus(config, seed=0)
    keys = [normalize_for_overlap(t) for t in deduped.splits["train"]["text"]]
    assert len(keys) == len(set(keys))
    seen = set(keys) | {normalize_for_overlap(t) for t in deduped.splits["validation"]["text"]}
    assert not any(normalize_for_overlap(t) in seen for t in deduped.splits["test"]["text"])


@pytest.mark.parametrize(
    "rows, extra, message",
    [
        ([{"text": "a", "label": "x"}] * 10, {}, "single class"),
        ([{"text": "", "label": "x"}, {"text": "b", "label": "y"}] * 5, {}, "empty text .*data rows 1, 3, 5"),
        ([{"text": "a", "labelz": "x"}] * 10, {}, "no column 'label'.*--label_column"),
        ([{"text": "a", "label": "x"}, {"text": "b", "label": "y"}] * 5, {"label_names": "x"}, "unknown label.*'y'"),
    ],
)
def test_bad_data_is_one_clear_error(tmp_path, rows, extra, message):
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(TfbertError, match=message):
        load_corpus(DataConfig(train_file=str(path), **extra), seed=0)


def test_unseen_test_label_names_file_and_rows(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", make_rows(60))
    test = write_jsonl(tmp_path / "test.jsonl", [{"text": "x", "label": "pos"}, {"text": "y", "label": "angry"}])
    with pytest.raises(TfbertError, match=r"--test_file .*test.jsonl: unknown label\(s\) 'angry' \(data rows 2\).*training never saw it"):
        load_corpus(DataConfig(train_file=str(train), test_file=str(test)), seed=0)


def test_entirely_empty_column(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\n,a\n,b\n", encoding="utf-8")
    with pytest.raises(TfbertError, match="column 'text' is entirely empty"):
        load_corpus(DataConfig(train_file=str(path)), seed=0)


def test_headerless_csv_and_tsv_load_with_columns(tmp_path):
    rows = make_rows(60)
    ids = {"neg": "0", "neu": "1", "pos": "2"}
    (tmp_path / "h.csv").write_text("".join(f"{ids[r['label']]},{r['text']}\n" for r in rows), encoding="utf-8")
    (tmp_path / "h.tsv").write_text("".join(f"{r['text']}\t{r['label']}\t\n" for r in rows), encoding="utf-8")
    by_csv = load_corpus(DataConfig(train_file=str(tmp_path / "h.csv"), columns="label,text",
                                    label_names="neg,neu,pos"), seed=1)
    by_tsv = load_corpus(DataConfig(train_file=str(tmp_path / "h.tsv"), columns="text,label"), seed=1)
    for corpus in (by_csv, by_tsv):
        assert corpus.label_names == ["neg", "neu", "pos"] and sum(corpus.sizes().values()) == 60
    assert by_csv.split_record["rows"] == by_tsv.split_record["rows"]
    assert by_tsv.splits["train"]["label"] == by_csv.splits["train"]["label"]
    for name, fix in (("h.csv", "--columns label,text"), ("h.tsv", "--columns text,label")):
        with pytest.raises(TfbertError, match="first row looks like data") as error:
            load_corpus(DataConfig(train_file=str(tmp_path / name)), seed=1)
        assert fix in str(error.value) and "\n" not in str(error.value)


def test_max_samples_take_stratified_subsets_after_splitting(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", make_rows(300))
    full = load_corpus(DataConfig(train_file=str(path)), seed=7)
    small = load_corpus(DataConfig(train_file=str(path), max_train_samples=60, max_eval_samples=9), seed=7)
    assert small.sizes() == {"train": 60, "validation": 9, "test": 9}
    assert sorted(small.splits["train"]["label"]) == [0] * 20 + [1] * 20 + [2] * 20
    for split in ("train", "validation", "test"):  # the same splits, cut down
        assert set(small.split_record["rows"][split]) <= set(full.split_record["rows"][split])
        assert sorted(small.splits[split]["row_id"]) == small.split_record["rows"][split]
    assert small.split_record["subset"]["validation"] == "stratified 9 of 30 rows"
    same = load_corpus(DataConfig(train_file=str(path), max_train_samples=60, max_eval_samples=9), seed=7)
    assert same.split_record["rows"] == small.split_record["rows"]
    assert load_corpus(DataConfig(train_file=str(path), max_train_samples=1000), seed=7).sizes() == full.sizes()
