"""python -m tfbert.aggregate: one row per finished run, sorted, as CSV and Markdown; other runs counted."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tfbert.aggregate import FIELDS, collect_rows, main
from tfbert.errors import TfbertError

ROOT = Path(__file__).resolve().parent.parent


def _scores(f1: float) -> dict:
    return {"n": 30, "loss": 0.3, "accuracy": f1 + 0.01, "macro_precision": f1 + 0.02, "macro_recall": f1 - 0.01,
            "macro_f1": f1, "weighted_precision": f1, "weighted_recall": f1, "weighted_f1": f1}


def make_run(output: Path, dataset: str, model: str, stamp: str, status: str = "finished", test_f1: float = 0.9,
             baseline_f1: float | None = None, parameters: int | None = None) -> Path:
    """A run folder with the files a real run writes (status.json, config.json, metrics.json when finished)."""
    run = output / dataset / model.split("/")[-1] / stamp
    run.mkdir(parents=True)
    (run / "status.json").write_text(json.dumps({"status": status, "time": "2026-12-04T10:00:00"}))
    config = {
        "run_id": f"{dataset}/{model}/{stamp}",
        "settings": {"data": {"dataset": None, "train_file": f"{dataset}.jsonl", "max_length": 128},
                     "model": {"model_name": model},
                     "training": {"epochs": 3, "batch_size": 32, "lr": 5e-5, "seed": 42}},
        "resolved": {"precision_policy": "float32"},
        "labels": ["neg", "neu", "pos"],
        "data": {"name": dataset, "sizes": {"train": 240, "validation": 30, "test": 30}},
    }
    (run / "config.json").write_text(json.dumps(config))
    if status != "finished":
        return run
    metrics = {"best_epoch": 2, "epochs_run": 3, "validation": _scores(test_f1 + 0.005), "test": _scores(test_f1),
               "train_seconds": 12.5, "train_examples_per_second": 57.6}
    if baseline_f1 is not None:
        metrics["baseline"] = {"analyzer": "word 1-2", "test": _scores(baseline_f1)}
    if parameters is not None:
        metrics["parameters"] = parameters
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


@pytest.fixture()
def output(tmp_path) -> Path:
    root = tmp_path / "output"
    make_run(root, "sms_spam", "bert-base-uncased", "20261204_100000", test_f1=0.95, baseline_f1=0.974)
    make_run(root, "sms_spam", "sentence-transformers/all-MiniLM-L6-v2", "20261204_110000", test_f1=0.98,
             parameters=22_713_216)
    make_run(root, "ag_news", "bert-base-uncased", "20261204_120000", test_f1=0.89)
    make_run(root, "ag_news", "bert-base-uncased", "20261204_130000", status="failed")
    make_run(root, "ag_news", "bert-base-uncased", "20261204_140000", status="running")
    make_run(root, "ag_news", "bert-base-uncased", "20261204_150000", status="running")
    (make_run(root, "ag_news", "bert-base-uncased", "20261204_160000") / "metrics.json").unlink()
    return root


def test_one_row_per_finished_run_sorted_by_dataset_then_test_f1(output):
    collected = collect_rows([output])
    assert [(r["dataset"], r["model"], r["test_macro_f1"]) for r in collected.rows] == [
        ("ag_news", "bert-base-uncased", 0.89),
        ("sms_spam", "all-MiniLM-L6-v2", 0.98),
        ("sms_spam", "bert-base-uncased", 0.95),
    ]
    assert collected.skipped == {"failed": 1, "running": 2, "finished without metrics.json": 1}
    best = collected.rows[1]
    assert best["parameters"] == 22_713_216 and best["baseline_test_macro_f1"] is None
    bert = collected.rows[2]
    assert bert["parameters"] is None and bert["baseline_test_macro_f1"] == 0.974
    assert (bert["lr"], bert["batch_size"], bert["epochs"], bert["best_epoch"]) == (5e-5, 32, 3, 2)
    assert bert["validation_macro_f1"] == pytest.approx(0.955) and bert["test_macro_precision"] == pytest.approx(0.97)
    assert (bert["train_seconds"], bert["train_samples_per_second"]) == (12.5, 57.6)


def test_writes_csv_and_markdown_and_counts_skipped_runs(output, tmp_path, capsys):
    assert main([str(output), "--csv", str(tmp_path / "runs.csv")]) == 0
    captured = capsys.readouterr()
    assert captured.err.strip() == "skipped 4 run(s): 1 failed, 1 finished without metrics.json, 2 running"
    table = captured.out.splitlines()
    assert table[0] == "| " + " | ".join(FIELDS) + " |" and len(table) == 2 + 3
    assert "| ag_news | bert-base-uncased |  | 5e-05 | 32 | 3 | 2 |" in table[2]
    with open(tmp_path / "runs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["test_macro_f1"] for row in rows] == ["0.89", "0.98", "0.95"]
    assert rows[1]["parameters"] == "22713216" and rows[0]["parameters"] == "" and rows[2]["baseline_test_macro_f1"]
    assert main([str(output), "--markdown", str(tmp_path / "runs.md")]) == 0
    assert capsys.readouterr().out == ""
    assert (tmp_path / "runs.md").read_text().splitlines() == table


def test_run_folders_and_overlapping_paths_count_each_run_once(output):
    one = next((output / "ag_news").glob("*/20261204_120000"))
    assert len(collect_rows([one]).rows) == 1
    assert len(collect_rows([output, output / "sms_spam"]).rows) == 3


def test_a_path_without_runs_is_a_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(TfbertError, match="no run folders"):
        collect_rows([tmp_path / "empty"])
    with pytest.raises(TfbertError, match="no such folder"):
        collect_rows([tmp_path / "missing"])
    make_run(tmp_path / "out", "ag_news", "bert", "20261204_100000", status="failed")
    with pytest.raises(TfbertError, match="no finished run"):
        main([str(tmp_path / "out")])


def test_command_line_exit_code_and_help(tmp_path, output):
    run = lambda *args: subprocess.run([sys.executable, "-m", "tfbert.aggregate", *args], cwd=ROOT,  # noqa: E731
                                       capture_output=True, text=True, timeout=120)
    failed = run(str(tmp_path / "nothing"))
    assert failed.returncode == 2 and failed.stderr.startswith("error: ") and len(failed.stderr.splitlines()) == 1
    help_text = run("--help").stdout
    assert "--csv FILE" in help_text and "--markdown FILE" in help_text
    done = run(str(output))
    assert done.returncode == 0 and done.stdout.count("\n") == 5
