"""report.md from given metrics: scores, data, warnings, errors, figures and files, without training anything."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from tfbert import runs
from tfbert.config import TrainConfig
from tfbert.evaluation import evaluate_predictions
from tfbert.report import write_report

LABELS = ["ham", "spam"]


def _corpus(overlap: dict) -> SimpleNamespace:
    sizes = {"train": 80, "validation": 10, "test": 4}
    return SimpleNamespace(name="sms", label_names=LABELS, sizes=lambda: sizes, overlap=overlap,
                           sources={split: f"{split}.jsonl" for split in sizes},
                           split_record={"seed": 42, "made": {"validation": "stratified 10 of 90 rows of train.jsonl"}})


def _evaluations() -> dict:
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.95, 0.05], [0.4, 0.6]])
    labels = np.array([0, 1, 1, 0])
    texts = ["see you at 5", "WIN a prize | now", "call me\nlater", "free entry"]
    test = evaluate_predictions(probabilities, labels, LABELS, texts=texts, row_ids=[3, 5, 8, 9], top_errors=5)
    return {"validation": test, "test": test}


def _metrics(evaluations: dict, **extra) -> dict:
    return {"best_epoch": 2, "epochs_run": 3, "train_seconds": 41.7, "train_examples_per_second": 12.34,
            "validation": evaluations["validation"].metrics, "test": evaluations["test"].metrics, **extra}


@pytest.fixture()
def written(tmp_path):
    def write(metrics_extra: dict, overlap: dict | None = None) -> str:
        run = runs.create_run(tmp_path / "output", tmp_path / "plots", "sms", "tiny")
        evaluations = _evaluations()
        figures = {"loss": run.plots / "loss.png", "confusion": run.plots / "confusion_matrix_test.png"}
        path = write_report(run, TrainConfig(), _corpus(overlap or {}), _metrics(evaluations, **metrics_extra),
                            evaluations, figures, run.saved_model_base / "1", "float32", np.array([5, 7, 9, 200]))
        assert path == run.path / "report.md"
        return path.read_text(encoding="utf-8")

    return write


def test_scores_data_and_files(written):
    report = written({"run_mib": 12.345})
    assert report.startswith("# sms · sentence-transformers/all-MiniLM-L6-v2\n")
    assert "best epoch 2 of 3 by validation macro-F1; trained 42 s (12.3 examples/s), precision `float32`." in report
    assert "Run folder and figures: 12.3 MiB." in report
    assert "| accuracy | 0.5000 | 0.5000 |" in report
    assert "| test | 4 | test.jsonl |" in report
    assert "Splits made here (seed 42): validation: stratified 10 of 90 rows of train.jsonl." in report
    assert "25.0% of training texts truncated at --max_length 128" in report
    assert "## Warnings" not in report and "Unknown tokens" not in report
    assert "![loss](../../../../plots/sms/tiny/" in report and "confusion_matrix_test.png)" in report
    assert "`saved_model/1/`: SavedModel for TF Serving" in report and "compact/" not in report


def test_errors_are_listed_most_confident_first_and_escaped(written):
    report = written({})
    rows = [line for line in report.splitlines() if line.startswith("| spam | ham") or line.startswith("| ham | spam")]
    assert rows == ["| spam | ham | 0.950 | call me later |", "| ham | spam | 0.600 | free entry |"]
    assert "All listed in `errors.jsonl` (top 20)." in report


def test_warnings_and_data_checks_are_shown(written):
    warning = "unknown tokens: train 62.0% of the tokens are the model's unknown token (over 5%)"
    report = written({"warnings": [warning], "data_checks": {"unknown_token_share": {"train": 0.62, "test": 0.6}}},
                     overlap={"validation_in_earlier_splits": 0, "test_in_earlier_splits": 2})
    assert f"## Warnings\n\n- ⚠ {warning}\n\n## Scores" in report
    assert "Unknown tokens (the model's unknown token among all but special tokens): train 62.0%, test 60.0%." in report
    assert "0 validation and 2 test texts also in an earlier split. Scores on overlapping texts flatter" in report


def test_compact_export_line(written):
    compact = {"mib": 3.5, "encoder_layers": 5, "left_out_layers": [3], "test_macro_f1": 0.9, "test_macro_f1_change":
               -0.002, "layer_search": {"validation_macro_f1": 0.905, "validation_macro_f1_full": 0.902}}
    report = written({"compact": compact})
    assert ("- `compact/`: TFLite with int8 weights (3.5 MiB), 5 of 6 encoder layers (left out: 3; validation "
            "macro-F1 0.9050 vs 0.9020 with all), test macro-F1 0.9000 (-0.0020 vs the model)") in report


def test_the_baseline_stands_beside_the_model(written):
    floor = {"analyzer": "word 1-2", "validation": {"macro_f1": 0.61}, "test": {"macro_f1": 0.7}}
    report = written({"baseline": floor})
    assert "| baseline macro F1 (TF-IDF + logistic regression, word 1-2) | 0.6100 | 0.7000 |" in report
    assert "TF-IDF" not in written({})
