"""infer.py's inputs: texts and pairs from the command line and from files, checked before a model loads."""

import json

import pytest
from conftest import write_jsonl

from tfbert.cli import parse_infer_args
from tfbert.errors import TfbertError
from tfbert.inputs import check_pairs, collect_inputs, read_text_file, trained_with_pairs


def test_pairs_from_the_command_line_and_from_files(tmp_path):
    assert collect_inputs(parse_infer_args(["t1", "t2", "--text_pair", "p1", "--text_pair", "p2"])) == (
        ["t1", "t2"], ["p1", "p2"])
    assert collect_inputs(parse_infer_args(["t1"])) == (["t1"], None)
    write_jsonl(tmp_path / "a.jsonl", [{"title": "t1", "body": "p1"}, {"title": "t2", "body": "p2"}])
    (tmp_path / "a.csv").write_text("title,body\nt1,p1\nt2,p2\n", encoding="utf-8")
    for name in ("a.jsonl", "a.csv"):
        config = parse_infer_args(["--file", str(tmp_path / name), "--text_column", "title",
                                   "--text_pair_column", "body"])
        assert collect_inputs(config) == (["t1", "t2"], ["p1", "p2"]), name
    with pytest.raises(TfbertError, match="pairs for some texts only"):
        collect_inputs(parse_infer_args(["t0", "--text_pair", "p0", "--file", str(tmp_path / "a.jsonl"),
                                         "--text_column", "title"]))


@pytest.mark.parametrize("name, content, message", [
    ("a.jsonl", '{"text": "good"}\n\n{"text": "bad"}\n', "line 2 is empty"),
    ("a.jsonl", '{"text": "good"}\n{"text": "  "}\n', "line 2 has an empty 'text'"),
    ("a.jsonl", '{"text": "good"}\n', "line 1 has no 'body' field; set --text_pair_column"),
    ("a.csv", "text,id\ngood,1\n ,2\n", "empty 'text' on line.s. 3"),
    ("a.txt", "good\n", "--text_pair_column needs a .jsonl, .csv or .tsv --file"),
])
def test_bad_files_are_refused_in_one_line(tmp_path, name, content, message):
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(TfbertError, match=message) as error:
        read_text_file(str(tmp_path / name), "text", "body" if "body" in message or name == "a.txt" else None)
    assert "\n" not in str(error.value)


def test_plain_text_files_skip_blank_lines_and_jsonl_may_end_with_them(tmp_path):
    (tmp_path / "a.txt").write_text("good\n\nbad\n", encoding="utf-8")
    (tmp_path / "a.jsonl").write_text('{"text": "good"}\n\n\n', encoding="utf-8")
    assert read_text_file(str(tmp_path / "a.txt")) == (["good", "bad"], None)
    assert read_text_file(str(tmp_path / "a.jsonl")) == (["good"], None)


def test_pairs_follow_how_the_model_was_trained(tmp_path, caplog):
    for name, pair in (("single", False), ("pairs", True)):
        (tmp_path / name / "model").mkdir(parents=True)
        (tmp_path / name / "model" / "config.json").write_text("{}", encoding="utf-8")  # the HF config
        (tmp_path / name / "config.json").write_text(json.dumps({"settings": {"data": {}}, "data": {"text_pair": pair}}))
    assert trained_with_pairs(tmp_path / "single" / "model") is False
    assert trained_with_pairs(tmp_path / "pairs") is True
    assert trained_with_pairs(tmp_path) is None
    with pytest.raises(TfbertError, match="trained on single texts; leave the pairs out"):
        check_pairs(tmp_path / "single", ["p"])
    check_pairs(tmp_path / "single", None)
    check_pairs(tmp_path / "pairs", ["p"])
    with caplog.at_level("WARNING", logger="tfbert.inputs"):
        check_pairs(tmp_path / "pairs" / "model", None)
    assert any("trained on text pairs" in record.getMessage() for record in caplog.records)
