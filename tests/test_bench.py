"""The benchmark command end to end on a tiny model: one JSON object whose figures agree with the run it made."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_rows, write_jsonl

pytestmark = pytest.mark.slow  # runs the bench command as a subprocess

ROOT = Path(__file__).resolve().parent.parent


def run_bench(folder: Path, model_dir: Path, *flags: str) -> dict:
    """The bench's JSON report on train.jsonl and test.jsonl in ``folder``, with a tiny model in float32."""
    completed = subprocess.run(
        [sys.executable, "-m", "tfbert.bench", "--train_file", "train.jsonl", "--test_file", "test.jsonl",
         "--model_name", str(model_dir), "--epochs", "2", "--lr", "3e-3", "--batch_size", "16",
         "--precision", "float32", *flags],
        cwd=folder, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_bench_prints_one_json_object_consistent_with_its_run(tiny_model_dir, tmp_path):
    rows = make_rows(160)
    write_jsonl(tmp_path / "train.jsonl", rows[:120])
    write_jsonl(tmp_path / "test.jsonl", rows[120:])
    report = run_bench(tmp_path, tiny_model_dir, "--max_length", "32", "--compact_layers", "auto")
    run = Path(report["run_dir"])
    try:
        metrics = json.loads((run / "metrics.json").read_text())
        splits = json.loads((run / "splits.json").read_text())["rows"]
        assert report["n_test"] == 40 == len(splits["test"]) and report["n_train"] == len(splits["train"])
        assert report["test_macro_f1"] == pytest.approx(metrics["test"]["macro_f1"], abs=1e-4)
        # The float32 SavedModel and the compact file answer the same test texts about as the model did.
        assert report["saved_model_test_macro_f1"] == pytest.approx(report["test_macro_f1"], abs=1e-4)
        assert report["compact_test_macro_f1"] == pytest.approx(metrics["compact"]["test_macro_f1"], abs=1e-4)
        rate = report["compact_samples_per_s_batch4"]
        assert report["compact_speed_vs_saved_model"] == pytest.approx(
            rate / report["saved_model_predict_samples_per_s_batch32"], abs=0.006)
        assert 0 < report["single_text_latency_ms_p50"] <= report["single_text_latency_ms_p99"]
        assert report["compact_single_text_latency_ms_p50"] > 0
        assert report["train_samples_per_s_after_first_step"] > 0 and report["peak_rss_mib_training"] > 0
        assert report["compact_mib"] < report["saved_model_mib"]
        # 12 validation examples cannot resolve --compact_max_f1_drop 0.005: the compact model keeps both layers.
        assert "cannot resolve a macro-F1 change of 0.005" in metrics["compact"]["layer_search"]["skipped"]
        assert (report["compact_encoder_layers"], report["compact_left_out_layers"]) == (2, [])
        assert report["compact_layer_search_seconds"] is None
        assert report["compact_export_seconds"] == metrics["compact"]["seconds"] > 0
        # A person's first prediction, cold, from each export (figures only: nothing here says how fast).
        from tfbert.model_choice import choose_export

        assert report["infer_run_folder_answers_with"] == choose_export(run).kind
        assert all(report[f"infer_cold_seconds_{export}"] > 0 for export in ("saved_model", "compact", "run_folder"))
    finally:
        shutil.rmtree(run.parents[3], ignore_errors=True)  # the bench's own temporary folder


@pytest.mark.parametrize("task", ["multi_label", "regression"])
def test_bench_measures_every_task_and_long_texts_with_their_own_metric(tiny_model_dir, tmp_path, task):
    from test_tasks import topic_rows

    rows = topic_rows(160)
    for row in rows:  # long enough for a few windows of --max_length 8
        row["text"] = f"{row['text']} {row['text']} {row['text']}"
    write_jsonl(tmp_path / "train.jsonl", rows[:120])
    write_jsonl(tmp_path / "test.jsonl", rows[120:])
    extra = ["--task", "regression", "--label_column", "score"] if task == "regression" else []
    report = run_bench(tmp_path, tiny_model_dir, "--max_length", "8", "--long_text", "window", "--stride", "2", *extra)
    run = Path(report["run_dir"])
    try:
        metrics = json.loads((run / "metrics.json").read_text())
        metric = "pearson" if task == "regression" else "macro_f1"
        assert report["task"] == task and (report["long_text"], report["stride"]) == ("window", 2)
        assert "compact_error" not in report and metrics["compact"]["metric"] == metric
        assert report[f"test_{metric}"] == pytest.approx(metrics["test"][metric], abs=1e-4)
        # The float32 SavedModel answers as the model; the compact export as it did when train.py measured it.
        assert report[f"saved_model_test_{metric}"] == pytest.approx(report[f"test_{metric}"], abs=1e-4)
        assert report[f"compact_test_{metric}"] == pytest.approx(metrics["compact"][f"test_{metric}"], abs=1e-4)
        assert report["compact_samples_per_s_batch4"] > 0 and report["infer_cold_seconds_compact"] > 0
    finally:
        shutil.rmtree(run.parents[3], ignore_errors=True)


def test_bench_help_is_its_own_and_names_what_it_forces():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    completed = subprocess.run([sys.executable, "-m", "tfbert.bench", "--help"], env=env, capture_output=True,
                               text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    help_text = " ".join(completed.stdout.split())
    assert help_text.startswith("usage: python -m tfbert.bench") and "train.py [" not in help_text
    assert "--export_tflite, --patience 0" in help_text
