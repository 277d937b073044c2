import json

import pytest

from tfbert.data.files import file_fingerprint, read_table
from tfbert.errors import TfbertError


def test_formats_read_alike(tmp_path):
    rows = [{"text": "good, \"quoted\"\nsecond line", "label": "pos"}, {"text": "bad", "label": "neg"}]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (tmp_path / "a.json").write_text(json.dumps(rows), encoding="utf-8")
    (tmp_path / "a.csv").write_text('text,label\n"good, ""quoted""\nsecond line",pos\nbad,neg\n', encoding="utf-8")
    (tmp_path / "a.tsv").write_text('text\tlabel\n"good, ""quoted""\nsecond line"\tpos\nbad\tneg\n', encoding="utf-8")
    import pandas as pd

    pd.DataFrame(rows).to_parquet(tmp_path / "a.parquet")
    for name in ("a.jsonl", "a.json", "a.csv", "a.tsv", "a.parquet"):
        frame = read_table(tmp_path / name)
        assert frame["text"].tolist() == [r["text"] for r in rows], name
        assert frame["label"].tolist() == ["pos", "neg"], name


def test_csv_keeps_strings(tmp_path):
    (tmp_path / "a.csv").write_text("text,label\nx,001\ny,NA\n", encoding="utf-8")
    assert read_table(tmp_path / "a.csv")["label"].tolist() == ["001", "NA"]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.csv", None, "no such file"),
        ("empty.csv", b"", "is empty"),
        ("bad.jsonl", b'{"text": "a", "label": 1}\n{"text": oops}\n', "line 2 is not valid JSON"),
        ("latin.csv", "text,label\ncaf\xe9,1\n".encode("latin-1"), "not UTF-8 .* line 2"),
        ("data.xlsx", b"x", "unknown file type"),
        ("header_only.csv", b"text,label\n", "no rows"),
    ],
)
def test_bad_files_name_the_problem(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(TfbertError, match=message) as error:
        read_table(path, flag="--train_file")
    assert str(error.value).startswith(f"--train_file {path}")
    assert "\n" not in str(error.value)


def test_fingerprint_follows_content(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("text,label\na,1\n", encoding="utf-8")
    first = file_fingerprint(path)
    path.write_text("text,label\na,2\n", encoding="utf-8")
    assert file_fingerprint(path) != first


def test_headerless_files_take_their_names_from_columns(tmp_path):
    from tfbert.data.files import header_looks_like_data, suggest_columns

    (tmp_path / "a.csv").write_text('2,"great, really"\n0,awful\n', encoding="utf-8")
    (tmp_path / "a.tsv").write_text("great\tpos\t\nawful\tneg\t\n", encoding="utf-8")  # a trailing tab on each row
    (tmp_path / "b.tsv").write_text("id\ttext\tlabel\n1\tgreat\tpos\n", encoding="utf-8")
    csv_frame = read_table(tmp_path / "a.csv", columns=["label", "text"])
    assert csv_frame.to_dict("records") == [{"label": "2", "text": "great, really"}, {"label": "0", "text": "awful"}]
    tsv_frame = read_table(tmp_path / "a.tsv", columns=["text", "label"])
    assert tsv_frame.to_dict("records") == [{"text": "great", "label": "pos"}, {"text": "awful", "label": "neg"}]
    assert read_table(tmp_path / "b.tsv", columns=["_", "text", "label"]).columns.tolist() == ["text", "label"]
    with pytest.raises(TfbertError, match="--columns label,text,_: names 3 column.* has 2"):
        read_table(tmp_path / "a.csv", columns=["label", "text", "_"])
    (tmp_path / "a.jsonl").write_text('{"text": "a", "label": "b"}\n', encoding="utf-8")
    with pytest.raises(TfbertError, match="--columns is for CSV/TSV"):
        read_table(tmp_path / "a.jsonl", columns=["text", "label"])
    assert header_looks_like_data(["2", "great, really"]) and not header_looks_like_data(["label", "text"])
    assert suggest_columns(["great product, works well", "pos"]) == "text,label"


def test_trailing_delimiters_are_ignored_and_extra_fields_named(tmp_path):
    (tmp_path / "a.tsv").write_text("text\tlabel\ngood\tpos\t\nbad\tneg\t\n", encoding="utf-8")
    assert read_table(tmp_path / "a.tsv").to_dict("records") == [{"text": "good", "label": "pos"},
                                                                  {"text": "bad", "label": "neg"}]
    (tmp_path / "b.csv").write_text("text,label\ngood,pos\nbad, really bad,neg\n", encoding="utf-8")
    with pytest.raises(TfbertError, match="line 3 has 3 fields, the header 2; quote fields"):
        read_table(tmp_path / "b.csv")
