"""One run in named steps, in-process: the data checks and their warnings, and what a run leaves on disk."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import pytest
from conftest import make_rows, write_jsonl

from tfbert import runs
from tfbert.config import parse_train_args
from tfbert.data import checks
from tfbert.errors import TfbertError

TINY = ["--epochs", "1", "--batch_size", "8", "--max_length", "16", "--precision", "float32", "--patience", "0",
        "--cache_dir", "off"]
# Japanese and Russian sentiment words, none of them in conftest's VOCAB: the tiny tokenizer reads them as [UNK].
UNREADABLE = {
    "japanese": {"neg": ["悪い", "最悪", "壊れた"], "neu": ["普通", "まあまあ", "平凡"], "pos": ["良い", "素晴らしい", "満足"]},
    "russian": {"neg": ["плохо", "ужасно", "сломан"], "neu": ["нормально", "средне", "обычно"],
                "pos": ["хорошо", "отлично", "прекрасно"]},
}


def _config(tmp_path, model_dir, *args):
    return parse_train_args(["--model_name", str(model_dir), *TINY, "--output_dir", str(tmp_path / "output"),
                             "--plots_dir", str(tmp_path / "plots"), *args])


def _unique_rows(n: int, offset: int = 0) -> list[dict]:
    """Rows whose texts differ from each other (a letter tag per row), in words the tiny vocabulary knows."""
    rows = make_rows(n, seed=offset)
    tag = lambda i: "".join("abcdefghijklmnopqrstuvwxyz"[int(d)] for d in str(i + offset))  # noqa: E731
    return [{"text": f"{row['text']} {tag(i)}", "label": row["label"]} for i, row in enumerate(rows)]


def _tfbert_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("tfbert") and r.levelno >= logging.WARNING]


def _unreadable_rows(language: str, n: int = 60) -> list[dict]:
    rng = random.Random(0)
    words = UNREADABLE[language]
    labels = sorted(words)
    # A last word of its own (a kanji, two Cyrillic letters) keeps every text apart from the others.
    def tag(i: int) -> str:
        return chr(0x5000 + i) if language == "japanese" else chr(0x430 + i % 32) + chr(0x430 + i // 32)

    return [{"text": " ".join(rng.sample(words[labels[i % 3]], 2) + [rng.choice(sum(words.values(), [])), tag(i)]),
             "label": labels[i % 3]} for i in range(n)]


# --- unknown tokens ------------------------------------------------------------------------------------------------

def test_unknown_token_share_leaves_special_tokens_out():
    assert checks.unknown_token_share([[2, 1, 7, 3, 0, 0]], unk_id=1, special_ids={0, 1, 2, 3}) == 0.5
    assert checks.unknown_token_share([[2, 3]], unk_id=1, special_ids={1, 2, 3}) == 0.0


def test_japanese_is_told_by_its_script():
    assert checks.share_of_japanese(["この商品は最高です", "電池が悪い"]) > 0.9
    assert checks.share_of_japanese(["great phone", "плохо"]) == 0.0


def test_a_covered_corpus_passes_without_warning(tiny_model_dir, tmp_path, caplog):
    from tfbert.experiment import prepare

    write_jsonl(tmp_path / "reviews.jsonl", _unique_rows(90))
    lines = []
    with caplog.at_level(logging.WARNING):
        prepared = prepare(_config(tmp_path, tiny_model_dir, "--train_file", str(tmp_path / "reviews.jsonl")),
                           report=lines.append)
    shares = prepared.checks.unknown_token_share
    assert set(shares) == {"train", "validation", "test"} and max(shares.values()) <= checks.UNKNOWN_TOKEN_LIMIT
    assert prepared.checks.warnings == [] and not _tfbert_warnings(caplog)
    assert lines and lines[0].startswith("data: reviews")
    assert not (tmp_path / "output").exists()  # prepare writes nothing


@pytest.mark.parametrize("language, advice", [("japanese", "cl-tohoku/bert-base-japanese-v3"),
                                              ("russian", "a model whose vocabulary covers this language")])
def test_a_corpus_of_unknown_words_warns_with_its_share(tiny_model_dir, tmp_path, caplog, language, advice):
    from tfbert.experiment import prepare

    write_jsonl(tmp_path / "reviews.jsonl", _unreadable_rows(language))
    with caplog.at_level(logging.WARNING):
        prepared = prepare(_config(tmp_path, tiny_model_dir, "--train_file", str(tmp_path / "reviews.jsonl")),
                           report=lambda line: None)
    share = prepared.checks.unknown_token_share["train"]
    assert share > 0.5
    [warning] = prepared.checks.warnings
    assert f"train {share:.1%}" in warning and advice in warning
    assert _tfbert_warnings(caplog) == [warning]


# --- overlap ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shared, warns", [(1, False), (2, True)])  # of 100 test texts: 1 % is the limit
def test_overlap_over_one_percent_warns(tiny_model_dir, tmp_path, shared, warns):
    from tfbert.experiment import prepare

    train, validation, test = _unique_rows(120), _unique_rows(30, offset=1000), _unique_rows(100, offset=2000)
    test[:shared] = train[:shared]
    for name, rows in (("train", train), ("validation", validation), ("test", test)):
        write_jsonl(tmp_path / f"{name}.jsonl", rows)
    config = _config(tmp_path, tiny_model_dir, *(x for name in ("train", "validation", "test")
                                                 for x in (f"--{name}_file", str(tmp_path / f"{name}.jsonl"))))
    prepared = prepare(config, report=lambda line: None)
    assert prepared.checks.overlap_share == {"validation": 0.0, "test": shared / 100}
    overlap_warnings = [w for w in prepared.checks.warnings if w.startswith("overlap")]
    if warns:
        assert overlap_warnings == ["overlap: test 2.0% (2 texts) also in an earlier split (over 1%); their scores "
                                    "flatter the model; rerun with --dedupe to remove them"]
    else:
        assert overlap_warnings == []


# --- run folders ------------------------------------------------------------------------------------------------------

def test_size_leaves_out_the_folders_about_to_go(tmp_path):
    run = runs.create_run(tmp_path / "output", tmp_path / "plots", "data", "model")
    (run.path / "checkpoints").mkdir()
    (run.path / "checkpoints" / "best.data").write_bytes(b"x" * 2**20)
    (run.path / "metrics.json").write_bytes(b"x" * 2**19)
    (run.plots / "loss.png").write_bytes(b"x" * 2**19)
    assert runs.size_mib(run) == 2.0
    assert runs.size_mib(run, leaving_out=("checkpoints",)) == 1.0


def test_log_every_is_checked(tiny_model_dir, tmp_path):
    with pytest.raises(TfbertError, match="--log_every"):
        _config(tmp_path, tiny_model_dir, "--log_every", "-1")


@pytest.fixture(scope="module")
def finished(tiny_model_dir, tmp_path_factory):
    """A whole run in-process on Japanese texts the tiny vocabulary cannot read, tested on texts it trained on."""
    from tfbert.experiment import train

    work = tmp_path_factory.mktemp("finished")
    rows = _unreadable_rows("japanese", 60)
    write_jsonl(work / "train.jsonl", rows)
    write_jsonl(work / "test.jsonl", rows[:10])
    lines = []
    summary = train(_config(work, tiny_model_dir, "--train_file", str(work / "train.jsonl"), "--test_file",
                            str(work / "test.jsonl")), report=lines.append)
    return {"summary": summary, "lines": lines,
            "run": runs.Run(path=Path(summary["run_dir"]), plots=Path(summary["plots_dir"]), run_id="")}


@pytest.mark.slow
def test_a_finished_run_drops_its_checkpoints_and_reports_its_size(finished):
    run, summary = finished["run"], finished["summary"]
    assert runs.read_status(run.path)["status"] == "finished"
    assert not (run.path / "checkpoints").exists()
    metrics = json.loads((run.path / "metrics.json").read_text())
    on_disk = (runs.folder_bytes(run.path) + runs.folder_bytes(run.plots)) / 2**20
    assert metrics["run_mib"] == summary["run_mib"] == pytest.approx(on_disk, abs=0.05)


@pytest.mark.slow
def test_warnings_reach_the_summary_metrics_and_report(finished):
    run, summary = finished["run"], finished["summary"]
    metrics = json.loads((run.path / "metrics.json").read_text())
    assert metrics["warnings"] == summary["warnings"]
    assert [w.split(":")[0] for w in metrics["warnings"]][:2] == ["unknown tokens", "overlap"]
    below = metrics["test"]["macro_f1"] < metrics["baseline"]["test"]["macro_f1"]
    assert any("below the TF-IDF baseline" in w for w in metrics["warnings"]) == below
    assert "cl-tohoku/bert-base-japanese-v3" in metrics["warnings"][0]
    assert metrics["data_checks"]["unknown_token_share"]["train"] > 0.5
    assert metrics["data_checks"]["overlap_share"]["test"] == 1.0
    report = (run.path / "report.md").read_text()
    assert "## Warnings" in report and all(w in report for w in metrics["warnings"])


@pytest.mark.slow
@pytest.mark.parametrize("outcome", ["failed", "kept"])
def test_checkpoints_stay_after_a_failure_or_when_kept(tiny_model_dir, tmp_path, monkeypatch, outcome):
    """Both skip the export (the step after the checkpoint is written): one by failing there, one by faking it."""
    from tfbert import experiment

    def export(context, prepared, results):
        if outcome == "failed":
            raise RuntimeError("disk full")
        return context.run.saved_model_base / "1"

    monkeypatch.setattr(experiment, "_export", export)
    write_jsonl(tmp_path / "reviews.jsonl", _unique_rows(60))
    config = _config(tmp_path, tiny_model_dir, "--train_file", str(tmp_path / "reviews.jsonl"), "--export_tflite",
                     "off", *(["--keep_checkpoints"] if outcome == "kept" else []))  # no model/ to convert
    if outcome == "failed":
        with pytest.raises(RuntimeError, match="disk full"):
            experiment.train(config, report=lambda line: None)
    else:
        summary = experiment.train(config, report=lambda line: None)
    [run_dir] = (tmp_path / "output" / "reviews").glob("*/*")
    assert runs.read_status(run_dir)["status"] == ("failed" if outcome == "failed" else "finished")
    assert list((run_dir / "checkpoints").glob("best*"))
    if outcome == "kept":
        assert summary["run_mib"] >= runs.folder_bytes(run_dir / "checkpoints") / 2**20


@pytest.mark.slow
def test_the_baseline_is_fitted_on_the_same_splits_and_reported(finished):
    run, summary = finished["run"], finished["summary"]
    metrics = json.loads((run.path / "metrics.json").read_text())
    floor = metrics["baseline"]
    assert floor["analyzer"] == "word 1-2"  # these Japanese words are joined by spaces
    assert floor["train_examples"] == json.loads((run.path / "config.json").read_text())["data"]["sizes"]["train"]
    assert summary["baseline_test_macro_f1"] == floor["test"]["macro_f1"]
    assert 0 <= floor["test"]["macro_f1"] <= 1 and set(floor["validation"]) >= {"accuracy", "macro_f1"}
    assert metrics["parameters"] > 1000
