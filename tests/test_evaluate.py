"""evaluate.py in-process on one tiny trained run: the run folder reproduces the run's own test metrics; the
SavedModel and the compact export write the same files; labels the model lacks stop it, or count as errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_rows, write_jsonl

from tfbert.cli import parse_evaluate_args
from tfbert.errors import TfbertError
from tfbert.html_report import format_metric

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--epochs", "1", "--batch_size", "8", "--max_length", "16", "--precision", "float32", "--patience", "0",
        "--compact_layers", "all"]
FILES = ("metrics.json", "evaluation.json", "report.md", "report.html", "classification_report.txt", "errors.jsonl",
         "predictions_test.jsonl", "confusion_matrix_test.png")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir) -> dict:
    """One finished run on train/validation/test files, with its compact export."""
    from tfbert.config import parse_train_args
    from tfbert.experiment import train

    root = tmp_path_factory.mktemp("evaluate")
    files = {split: write_jsonl(root / f"{split}.jsonl", make_rows(n, seed=seed))
             for split, n, seed in (("train", 60, 1), ("validation", 15, 2), ("test", 21, 3))}
    summary = train(parse_train_args([
        "--model_name", str(tiny_model_dir), *TINY, "--output_dir", str(root / "output"),
        "--plots_dir", str(root / "plots"), "--train_file", str(files["train"]),
        "--validation_file", str(files["validation"]), "--test_file", str(files["test"]), "--export_tflite",
    ]), report=lambda line: None)
    return {"root": root, "run": Path(summary["run_dir"]), "saved_model": Path(summary["saved_model"]), **files}


def _evaluate(*args: str) -> dict:
    from tfbert.evaluate import evaluate_model

    return evaluate_model(parse_evaluate_args(list(args)), report=lambda line: None)


def _metrics(folder: str) -> dict:
    return json.loads((Path(folder) / "metrics.json").read_text(encoding="utf-8"))


@pytest.mark.slow  # trains a run first
def test_the_run_folder_reproduces_the_runs_test_metrics(trained):
    summary = _evaluate("--model", str(trained["run"]), "--test_file", str(trained["test"]))
    folder = Path(summary["evaluation_dir"])
    assert folder.parent == trained["run"] / "evaluations" and folder.name.startswith("test_")
    assert all((folder / name).is_file() for name in FILES)
    run_test = json.loads((trained["run"] / "metrics.json").read_text(encoding="utf-8"))["test"]
    test = _metrics(folder)["test"]
    assert test.keys() == run_test.keys()
    assert {k: v for k, v in test.items() if k != "loss"} == {k: v for k, v in run_test.items() if k != "loss"}
    assert test["loss"] == pytest.approx(run_test["loss"], abs=1e-6)
    record = json.loads((folder / "evaluation.json").read_text(encoding="utf-8"))
    from tfbert.data.files import file_fingerprint

    assert record["data"]["fingerprint"] == file_fingerprint(trained["test"]) and record["predictor"] == "KerasPredictor"
    assert "run's test split" in (folder / "report.md").read_text(encoding="utf-8")
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert f'data-metric="test.macro_f1">{format_metric(test["macro_f1"])}<' in page


@pytest.mark.slow  # trains a run first
@pytest.mark.parametrize("export", ["saved_model", "compact"])
def test_the_exports_write_the_same_files(trained, export):
    model = trained["saved_model"] if export == "saved_model" else trained["run"] / "compact"
    summary = _evaluate("--model", str(model), "--test_file", str(trained["test"]))
    folder = Path(summary["evaluation_dir"])
    assert folder.parent == trained["run"] / "evaluations"  # found the run above the export
    assert all((folder / name).is_file() for name in FILES)
    test = _metrics(folder)["test"]
    assert test["n"] == 21 and 0 <= test["macro_f1"] <= 1


def _with_unknown_label(trained) -> Path:
    rows = make_rows(9, seed=4) + [{"text": "great phone", "label": "mixed"}, {"text": "bad book", "label": "mixed"}]
    return write_jsonl(trained["root"] / "mixed.jsonl", rows)


@pytest.mark.slow  # trains a run first
def test_an_unknown_label_stops_with_one_line_naming_the_flag(trained):
    with pytest.raises(TfbertError) as caught:
        _evaluate("--model", str(trained["run"]), "--test_file", str(_with_unknown_label(trained)))
    message = str(caught.value)
    assert "mixed.jsonl" in message and "'mixed' (2 rows)" in message and "--allow_unknown_labels" in message
    assert "\n" not in message


@pytest.mark.slow  # trains a run first
def test_unknown_labels_allowed_count_as_errors(trained, tmp_path):
    summary = _evaluate("--model", str(trained["run"]), "--test_file", str(_with_unknown_label(trained)),
                        "--allow_unknown_labels", "--output_dir", str(tmp_path / "evals"))
    folder = Path(summary["evaluation_dir"])
    assert folder.parent == tmp_path / "evals" and summary["unknown_label_rows"] == 2
    metrics = _metrics(folder)
    assert metrics["unknown_labels"] == {"mixed": 2} and metrics["test"]["unknown_labels"] == {"mixed": 2}
    assert metrics["test"]["n"] == 11 and metrics["test"]["accuracy"] <= 9 / 11
    errors = [json.loads(line) for line in (folder / "errors.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sum(1 for e in errors if e.get("unknown_label") and e["label"] == "mixed") == 2
    assert np.asarray(metrics["confusion_test"]).shape == (4, 4)


def test_integer_labels_map_by_position_and_names_by_name():
    from tfbert.evaluate import gold_labels

    assert gold_labels(["1", "0"], ["neg", "pos"], "--test_file x", False).ids.tolist() == [1, 0]
    assert gold_labels(["pos", "neg"], ["neg", "pos"], "--test_file x", False).ids.tolist() == [1, 0]


def test_flags_are_checked_all_at_once():
    with pytest.raises(TfbertError) as caught:
        parse_evaluate_args(["--test_file", "a.jsonl", "--dataset", "ag_news", "--batch_size", "0"])
    message = str(caught.value)
    assert "--model is required" in message and "not both" in message and "--batch_size" in message


@pytest.mark.slow
def test_evaluate_py_end_to_end(trained, tmp_path):
    command = [sys.executable, str(ROOT / "evaluate.py"), "--model", str(trained["run"] / "model"),
               "--test_file", str(trained["test"]), "--output_dir", str(tmp_path / "evals"), "--json"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert (Path(summary["evaluation_dir"]) / "metrics.json").is_file()
    bad = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--model", str(trained["run"]),
                          "--test_file", str(tmp_path / "missing.jsonl")], capture_output=True, text=True, cwd=ROOT,
                         timeout=600)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "missing.jsonl" in bad.stderr
