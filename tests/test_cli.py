"""End to end: train.py and infer.py as a user runs them, on a tiny model and tiny data."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_rows, write_jsonl

pytestmark = pytest.mark.slow  # every test runs train.py or infer.py as a subprocess

ROOT = Path(__file__).resolve().parent.parent
TINY_TRAINING = ["--epochs", "8", "--lr", "3e-3", "--batch_size", "16", "--max_length", "32",
                 "--precision", "float32", "--patience", "0", "--top_errors", "5", "--deterministic"]


def run_cli(script: str, *args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def trained_run(tiny_model_dir, tmp_path_factory):
    """One real training run through the command line; every test below reads its files."""
    work = tmp_path_factory.mktemp("cli")
    rows = make_rows(300)
    write_jsonl(work / "reviews.jsonl", rows)
    completed = run_cli("train.py", "--train_file", "reviews.jsonl", "--model_name", str(tiny_model_dir),
                        *TINY_TRAINING, cwd=work)
    assert completed.returncode == 0, completed.stderr[-4000:]
    runs = list((work / "output" / "reviews").glob("*/*"))
    assert len(runs) == 1
    return {"work": work, "run": runs[0], "rows": rows, "stdout": completed.stdout}


def test_run_folder_is_complete(trained_run):
    run, work = trained_run["run"], trained_run["work"]
    for name in ("config.json", "log.csv", "metrics.json", "classification_report.txt", "errors.jsonl", "report.md",
                 "splits.json", "status.json", "predictions_test.jsonl", "predictions_validation.jsonl",
                 "model/tf_model.h5", "model/config.json", "model/tokenizer.json", "model/vocab.txt",
                 "model/tfbert.json", "saved_model/1/saved_model.pb",
                 "compact/model_int8.tflite", "compact/tfbert.json"):  # --export_tflite auto
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").rglob("events.out.tfevents.*"))
    plots = work / "plots" / run.relative_to(work / "output")
    for name in ("loss.png", "metrics.png", "confusion_matrix_test.png", "lengths.png"):
        assert (plots / name).stat().st_size > 5000, name
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    assert not list(run.glob("*.partial")) and not list(run.rglob(".*.tmp*"))
    assert "run_dir" in trained_run["stdout"] and str(run.name) in trained_run["stdout"]


def test_config_records_settings_versions_and_data(trained_run):
    config = json.loads((trained_run["run"] / "config.json").read_text())
    assert config["settings"]["training"]["lr"] == 3e-3
    assert config["settings"]["data"]["max_length"] == 32
    assert config["labels"] == ["neg", "neu", "pos"]
    assert len(config["data"]["fingerprint"]) == 64
    assert config["data"]["sizes"] == {"train": 240, "validation": 30, "test": 30}
    assert {"tensorflow", "transformers", "datasets", "tf-keras"} <= set(config["versions"])
    assert config["resolved"]["precision_policy"] == "float32"
    assert config["resolved"]["compact_export"] is True  # --export_tflite auto
    from tfbert.model_settings import find_settings

    run = trained_run["run"]  # every folder of the model records that it reads single texts
    assert [find_settings(run / folder).text_pairs for folder in ("model", "saved_model", "compact")] == [False] * 3
    splits = json.loads((trained_run["run"] / "splits.json").read_text())
    assert sorted(sum(splits["rows"].values(), [])) == list(range(300))


def test_metrics_match_a_recomputation_from_predictions(trained_run):
    from sklearn.metrics import accuracy_score, f1_score

    run, rows = trained_run["run"], trained_run["rows"]
    metrics = json.loads((run / "metrics.json").read_text())
    predictions = [json.loads(line) for line in (run / "predictions_test.jsonl").read_text().splitlines()]
    splits = json.loads((run / "splits.json").read_text())
    assert sorted(p["row_id"] for p in predictions) == splits["rows"]["test"]
    gold = [p["label"] for p in predictions]
    assert gold == [rows[p["row_id"]]["label"] for p in predictions]
    predicted = [p["predicted"] for p in predictions]
    assert metrics["test"]["accuracy"] == pytest.approx(accuracy_score(gold, predicted))
    assert metrics["test"]["macro_f1"] == pytest.approx(f1_score(gold, predicted, average="macro"))
    assert 200 < metrics["peak_rss_mib_training"] < 16000  # TensorFlow alone takes a few hundred MiB
    errors = [json.loads(line) for line in (run / "errors.jsonl").read_text().splitlines()]
    wrong = [p for p in predictions if p["label"] != p["predicted"]]
    assert len(errors) == min(5, len(wrong))
    confidences = [e["confidence"] for e in errors]
    assert confidences == sorted(confidences, reverse=True)
    assert all(e["text"] == rows[e["row_id"]]["text"] and e["label"] != e["predicted"] for e in errors)
    # The tiny model learns (30 test texts are too few for a stable accuracy bar; the loss is not).
    with open(run / "log.csv") as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f)]
    assert losses[-1] < losses[0] - 0.05


def test_best_epoch_weights_are_the_ones_saved(trained_run):
    run = trained_run["run"]
    metrics = json.loads((run / "metrics.json").read_text())
    with open(run / "log.csv") as f:
        log = list(csv.DictReader(f))
    assert len(log) == 8
    scores = [float(row["val_macro_f1"]) for row in log]
    assert metrics["best_epoch"] == int(np.argmax(scores)) + 1
    assert metrics["validation"]["macro_f1"] == pytest.approx(max(scores), abs=1e-6)


def test_infer_matches_the_model(trained_run):
    run, work = trained_run["run"], trained_run["work"]
    texts = ["great phone really good", "awful broken item", "この商品は最高です"]
    from tfbert.predictors import KerasPredictor

    from tfbert.model_choice import choose_export
    from tfbert.predictors import load_predictor

    model = KerasPredictor(run / "model").predict(texts)
    choice = choose_export(run)  # compact/ when it gives the model's labels, else saved_model/
    assert choice.kind in ("compact", "saved_model"), choice.reason
    chosen = load_predictor(str(choice.path)).predict(texts)
    np.testing.assert_allclose(chosen, model, atol=0.01)  # int8 embeddings move probabilities by ~1e-3
    for model_arg, expected in (([], chosen), (["--model", str(run)], chosen), (["--model", str(run / "model")], model),
                                (["--model", str(run / "saved_model")], model)):
        completed = run_cli("infer.py", *texts, "--json", "--top_k", "3", *model_arg, cwd=work)
        assert completed.returncode == 0, completed.stderr[-3000:]
        answers = [json.loads(line) for line in completed.stdout.splitlines()]
        assert [a["text"] for a in answers] == texts
        labels = ["neg", "neu", "pos"]
        for answer, row in zip(answers, expected):
            assert answer["label"] == labels[int(row.argmax())]
            assert answer["confidence"] == pytest.approx(float(row.max()), abs=1e-5), model_arg
            assert [t["label"] for t in answer["top_k"]] == [labels[i] for i in np.argsort(-row)]


def test_infer_reads_files_and_prints_plain_lines(trained_run):
    work = trained_run["work"]
    (work / "texts.txt").write_text("good item\n\nbad phone\n", encoding="utf-8")
    write_jsonl(work / "texts.jsonl", [{"body": "good item"}, {"body": "bad phone"}])
    plain = run_cli("infer.py", "--file", "texts.txt", cwd=work)
    assert plain.returncode == 0, plain.stderr[-2000:]
    lines = plain.stdout.splitlines()
    assert len(lines) == 2 and lines[0].endswith("\tgood item") and lines[0].split()[0] in {"neg", "neu", "pos"}
    jsonl = run_cli("infer.py", "--file", "texts.jsonl", "--text_column", "body", "--json", cwd=work)
    assert [json.loads(line)["text"] for line in jsonl.stdout.splitlines()] == ["good item", "bad phone"]


def _assert_clean_failure(completed: subprocess.CompletedProcess, *fragments: str) -> None:
    assert completed.returncode == 2, (completed.returncode, completed.stderr[-2000:])
    lines = [line for line in completed.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, completed.stderr[-2000:]
    assert "Traceback" not in completed.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    "setup, args, fragments",
    [
        (None, ["--train_file", "missing.jsonl"], ["--train_file missing.jsonl", "no such file"]),
        ("empty", ["--train_file", "data.csv"], ["data.csv", "empty"]),
        ("no_label_column", ["--train_file", "data.jsonl"], ["no column 'label'", "--label_column"]),
        ("empty_texts", ["--train_file", "data.jsonl"], ["empty text", "data rows 2"]),
        ("unseen_test_label", ["--train_file", "data.jsonl", "--test_file", "test.jsonl"], ["--test_file", "'angry'"]),
        ("single_class", ["--train_file", "data.jsonl"], ["single class"]),
        ("latin1", ["--train_file", "data.csv"], ["not UTF-8", "line 3"]),
        ("good", ["--train_file", "data.jsonl", "--max_length", "100"], ["--max_length 100", "limit of 64"]),
        ("good", ["--train_file", "data.jsonl", "--model_name", "not_a_model"], ["--model_name not_a_model"]),
        ("good", ["--train_file", "data.jsonl", "--epochs", "0", "--lr", "5"], ["--epochs", "--lr"]),
        ("headerless", ["--train_file", "data.csv"], ["first row looks like data", "--columns label,text"]),
    ],
)
def test_bad_training_input_is_one_line_exit_2_and_no_run(tiny_model_dir, tmp_path, setup, args, fragments):
    rows = make_rows(30)
    if setup == "empty":
        (tmp_path / "data.csv").write_bytes(b"")
    elif setup == "no_label_column":
        write_jsonl(tmp_path / "data.jsonl", [{"text": r["text"], "class": r["label"]} for r in rows])
    elif setup == "empty_texts":
        write_jsonl(tmp_path / "data.jsonl", rows[:1] + [{"text": "  ", "label": "pos"}] + rows[1:])
    elif setup == "unseen_test_label":
        write_jsonl(tmp_path / "data.jsonl", rows)
        write_jsonl(tmp_path / "test.jsonl", [{"text": "x", "label": "angry"}])
    elif setup == "single_class":
        write_jsonl(tmp_path / "data.jsonl", [{"text": r["text"], "label": "pos"} for r in rows])
    elif setup == "latin1":
        (tmp_path / "data.csv").write_bytes("text,label\ngood,pos\ncaf\xe9 bad,neg\n".encode("latin-1"))
    elif setup == "headerless":
        (tmp_path / "data.csv").write_text("".join(f"{r['label']},{r['text']}\n" for r in rows), encoding="utf-8")
    elif setup == "good":
        write_jsonl(tmp_path / "data.jsonl", rows)
        (tmp_path / "not_a_model").mkdir()
    if "--model_name" not in args:
        args = [*args, "--model_name", str(tiny_model_dir)]
    completed = run_cli("train.py", *args, cwd=tmp_path, timeout=300)
    _assert_clean_failure(completed, *fragments)
    assert not list(tmp_path.glob("output/**/metrics.json"))
    assert not (tmp_path / "output").exists()


def test_bad_inference_input(trained_run, tmp_path):
    not_a_model = tmp_path / "folder"
    not_a_model.mkdir()
    _assert_clean_failure(run_cli("infer.py", "text", "--model", str(not_a_model), cwd=tmp_path), "not a model")
    _assert_clean_failure(run_cli("infer.py", "text", cwd=tmp_path), "no finished run")
    _assert_clean_failure(run_cli("infer.py", cwd=trained_run["work"]), "no texts")
    _assert_clean_failure(run_cli("infer.py", "--file", "nope.txt", cwd=tmp_path), "--file nope.txt")


def test_bfloat16_training_exports_bfloat16_with_float32_probabilities(tiny_model_dir, tmp_path):
    """Trained under mixed_bfloat16, the SavedModel computes in bfloat16 too (auto) and agrees with the
    float32 Keras model to bfloat16's resolution; float32 runs match to 1e-5 (test_infer_matches_the_model)."""
    write_jsonl(tmp_path / "reviews.jsonl", make_rows(90))
    completed = run_cli("train.py", "--train_file", "reviews.jsonl", "--model_name", str(tiny_model_dir), "--epochs", "1",
                        "--max_length", "32", "--precision", "bfloat16", "--quiet", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    run = next((tmp_path / "output" / "reviews").glob("*/*"))
    resolved = json.loads((run / "config.json").read_text())["resolved"]
    assert (resolved["precision_policy"], resolved["export_precision_policy"]) == ("mixed_bfloat16", "mixed_bfloat16")
    from tfbert.predictors import KerasPredictor, SavedModelPredictor

    texts = ["great phone really good", "awful broken item", "okay item"]
    served = SavedModelPredictor(run / "saved_model")
    assert served.metadata["compute_policy"] == "mixed_bfloat16"
    probabilities = served.predict(texts)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities, KerasPredictor(run / "model").predict(texts), atol=1e-2)


# What TensorFlow's C++ side and the libraries print while starting; none of it may reach a user by default.
STARTUP_NOISE = ("cudart_stub", "absl::InitializeLog", "cuInit", "oneDNN custom operations", "Unable to register cu",
                 "computation placer", "TensorFlow version", "Disabling PyTorch")


def test_infer_prints_one_line_and_no_startup_noise(trained_run):
    run, work = trained_run["run"], trained_run["work"]
    completed = run_cli("infer.py", "--model", str(run), "great phone really good", cwd=work)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert len(completed.stdout.splitlines()) == 1 and completed.stdout.endswith("\tgreat phone really good\n")
    assert not [line for line in completed.stderr.splitlines() if any(n in line for n in STARTUP_NOISE)], \
        completed.stderr[-3000:]
    verbose = run_cli("infer.py", "--model", str(run), "--verbose", "great phone really good", cwd=work)
    assert verbose.returncode == 0 and verbose.stdout == completed.stdout  # start-up lines may show on stderr


def test_infer_refuses_empty_texts_and_pairs_for_a_single_text_model(trained_run, tmp_path):
    run = str(trained_run["run"])
    _assert_clean_failure(run_cli("infer.py", "", "--model", run, cwd=tmp_path), "text 1", "empty")
    (tmp_path / "texts.jsonl").write_text('{"text": "good"}\n\n{"text": "bad"}\n', encoding="utf-8")
    _assert_clean_failure(run_cli("infer.py", "--file", "texts.jsonl", "--model", run, cwd=tmp_path),
                          "--file texts.jsonl", "line 2 is empty")
    _assert_clean_failure(run_cli("infer.py", "a title", "--text_pair", "its body", "--model", run, cwd=tmp_path),
                          "--text_pair", "trained on single texts")
    metadata = json.loads((trained_run["run"] / "saved_model" / "1" / "assets.extra" / "tfbert" / "metadata.json")
                          .read_text(encoding="utf-8"))
    assert set(metadata["signatures"]) == {"serving_default", "predict_ids"}  # no predict_text_pair to load


@pytest.mark.slow
def test_a_model_trained_on_pairs_exports_the_pair_signature_and_answers_pairs(tiny_model_dir, tmp_path):
    from tfbert.predictors import SavedModelPredictor

    rows = [{"title": first["text"], "body": second["text"], "label": first["label"]}
            for first, second in zip(make_rows(120), make_rows(120, seed=5))]
    write_jsonl(tmp_path / "pairs.jsonl", rows)
    completed = run_cli("train.py", "--train_file", "pairs.jsonl", "--text_column", "title", "--text_pair_column",
                        "body", "--model_name", str(tiny_model_dir), "--epochs", "1", "--max_length", "32",
                        "--precision", "float32", "--quiet", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    run = next((tmp_path / "output" / "pairs").glob("*/*"))
    assert json.loads((run / "config.json").read_text())["data"]["text_pair"] is True
    saved_model = run / "saved_model" / "1"
    metadata = json.loads((saved_model / "assets.extra" / "tfbert" / "metadata.json").read_text(encoding="utf-8"))
    assert set(metadata["signatures"]) == {"serving_default", "predict_ids", "predict_text_pair"}
    assert metadata["text_pairs"] is True  # and the model's and the compact export's settings say so too
    assert [json.loads((run / f / "tfbert.json").read_text())["text_pairs"] for f in ("model", "compact")] == [True] * 2
    answered = run_cli("infer.py", "great phone", "--text_pair", "awful item", "--json", "--model", str(saved_model),
                       cwd=tmp_path)
    assert answered.returncode == 0, answered.stderr[-3000:]
    expected = SavedModelPredictor(saved_model).predict(["great phone"], ["awful item"])[0]
    assert json.loads(answered.stdout)["confidence"] == pytest.approx(float(expected.max()), abs=1e-5)


@pytest.mark.slow
def test_headerless_tsv_trains_with_columns_and_max_samples(tiny_model_dir, tmp_path):
    rows = make_rows(150)
    # Headerless, text<TAB>label with a trailing tab on each row, as in several public Japanese sets.
    (tmp_path / "train.tsv").write_text("".join(f"{r['text']}\t{r['label']}\t\n" for r in rows), encoding="utf-8")
    completed = run_cli("train.py", "--train_file", "train.tsv", "--columns", "text,label", "--model_name",
                        str(tiny_model_dir), "--epochs", "1", "--max_length", "32", "--precision", "float32",
                        "--max_train_samples", "60", "--max_eval_samples", "9", "--export_tflite", "off", "--quiet",
                        cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert not [line for line in completed.stderr.splitlines() if any(n in line for n in STARTUP_NOISE)]
    run = next((tmp_path / "output" / "train").glob("*/*"))
    assert not (run / "compact").exists() and "compact" not in json.loads((run / "metrics.json").read_text())
    config = json.loads((run / "config.json").read_text())
    assert config["labels"] == ["neg", "neu", "pos"]
    assert config["data"]["sizes"] == {"train": 60, "validation": 9, "test": 9}
    settings = config["settings"]["data"]
    assert (settings["columns"], settings["max_train_samples"], settings["max_eval_samples"]) == ("text,label", 60, 9)
    assert config["data"]["text_pair"] is False


def test_exit_now_keeps_every_written_line_and_the_exit_code():
    import subprocess
    import sys

    script = ("import logging, sys\nfrom tfbert.cli import exit_now\nlogging.basicConfig(stream=sys.stderr)\n"
              "print('line ' * 20000)\nlogging.getLogger('t').warning('last words')\nsys.stdout.write('no newline')\n"
              "exit_now(3)\nprint('never')")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert done.stdout == "line " * 20000 + "\nno newline"
    assert "last words" in done.stderr
