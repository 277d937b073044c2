"""A person's first prediction: the tokenizer without transformers, the choice of export, and infer.py on a compact
export without TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_rows, write_jsonl
from test_cli import ROOT, run_cli

from tfbert.export_tflite import MODEL_FILE
from tfbert.light_tokenizer import load_light_tokenizer
from tfbert.model_choice import MIN_LABEL_AGREEMENT, choose_export, label_agreement, record_agreement

TEXTS = ["great phone really good " * 4, "awful", "この商品は最高です", "café naïve 😀 HELLO world!", "okay",
         "good " * 40]
PAIRS = ["fine " * 30, "bad bad very bad " * 3, "x", "the item", "so so", "poor"]


@pytest.fixture(scope="module")
def hf_tokenizer(tiny_model_dir):
    from tfbert.tokenizers import load_tokenizer

    return load_tokenizer(str(tiny_model_dir))


@pytest.mark.parametrize("truncation", ["head", "tail", "head_tail"])
@pytest.mark.parametrize("max_length", [8, 13, 64])
@pytest.mark.parametrize("pairs", [None, PAIRS], ids=["single", "pairs"])
def test_light_tokenizer_gives_the_ids_training_gives(tiny_model_dir, hf_tokenizer, truncation, max_length, pairs):
    from tfbert.data.pipeline import encode_batch

    light, why = load_light_tokenizer(tiny_model_dir, max_length, truncation)
    assert light is not None, why
    expected = encode_batch(hf_tokenizer, TEXTS, pairs, max_length, truncation, count_tokens=False)
    encoded = light.encode(TEXTS, pairs)
    assert encoded["input_ids"] == expected["input_ids"]
    assert encoded["token_type_ids"] == expected["token_type_ids"]
    assert max(len(ids) for ids in encoded["input_ids"]) == min(max_length, max(map(len, expected["input_ids"])))
    padded = light.pad(encoded["input_ids"], encoded["token_type_ids"])
    reference = hf_tokenizer.pad(dict(expected), return_tensors="np")
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        np.testing.assert_array_equal(padded[key], reference[key])
        assert padded[key].dtype == np.int32


@pytest.mark.parametrize("max_length, stride", [(8, 0), (8, 3), (13, 5)])
@pytest.mark.parametrize("pairs", [None, PAIRS], ids=["single", "pairs"])
def test_light_tokenizer_gives_the_windows_training_gives(tiny_model_dir, hf_tokenizer, max_length, stride, pairs):
    from tfbert.data.pipeline import encode_batch

    light, why = load_light_tokenizer(tiny_model_dir, max_length, stride=stride)
    assert light is not None, why
    expected = encode_batch(hf_tokenizer, TEXTS, pairs, max_length, "head", count_tokens=False, stride=stride)
    encoded = light.encode(TEXTS, pairs)
    assert max(len(windows) for windows in expected["window_ids"]) > 1  # texts longer than a window
    for key, value in expected.items():
        assert encoded[key] == value, key


def test_light_tokenizer_refuses_what_it_cannot_match(tiny_model_dir, tmp_path):
    assert load_light_tokenizer(tiny_model_dir, 16, word_tokenizer="mecab")[1].startswith("--word_tokenizer mecab")
    assert "no tokenizer.json" in load_light_tokenizer(tmp_path, 16)[1]
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        (tmp_path / name).write_bytes((tiny_model_dir / name).read_bytes())
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": "BertJapaneseTokenizer"}))
    light, why = load_light_tokenizer(tmp_path, 16)
    assert light is None and "BertJapaneseTokenizer" in why
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, "do_lower_case": False}))
    light, why = load_light_tokenizer(tmp_path, 16)
    assert light is None and "do_lower_case" in why


def test_answer_agreement_of_label_sets_and_scores():
    from tfbert.model_choice import SCORE_TOLERANCE, answer_agreement

    probabilities = np.array([[0.9, 0.6], [0.2, 0.1], [0.4, 0.8]])
    assert answer_agreement("multi_label", probabilities, [["a", "b"], [], ["b"]], ["a", "b"], [0.5, 0.5]) == 1.0
    assert answer_agreement("multi_label", probabilities, [["a", "b"], [], ["b"]], ["a", "b"], [0.3, 0.5]) == 0.6667
    reference = [1.0, 2.0, 3.0, 4.0]  # standard deviation 1.118
    near, far = 1.118 * SCORE_TOLERANCE * 0.9, 1.118 * SCORE_TOLERANCE * 1.1
    scores = np.array([[1.0 + near], [2.0 - near], [3.0 + far], [4.0]])
    assert answer_agreement("regression", scores, reference, ["score"]) == 0.75
    assert answer_agreement("single_label", np.array([[0.9, 0.1]]), ["ham"], ["ham", "spam"]) == 1.0


def test_label_agreement_and_its_record(tmp_path):
    probabilities = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.7, 0.3]])
    assert label_agreement(probabilities, ["ham", "spam", "ham", "ham"], ["ham", "spam"]) == 0.75
    with pytest.raises(ValueError):
        label_agreement(probabilities, ["ham"], ["ham", "spam"])
    (tmp_path / "tfbert.json").write_text(json.dumps({"labels": ["ham", "spam"], "format": "tflite"}))
    record_agreement(tmp_path, 0.75)
    assert json.loads((tmp_path / "tfbert.json").read_text()) == {"labels": ["ham", "spam"], "format": "tflite",
                                                                   "test_label_agreement": 0.75}


def _run_folder(root: Path, agreement=None, compact_labels=("neg", "pos"), model_labels=("neg", "pos"),
                saved_model_policy="float32") -> Path:
    """A run folder's files that the choice reads (the model files themselves are never opened)."""
    (root / "model").mkdir(parents=True)
    (root / "model" / "config.json").write_text(json.dumps({"id2label": dict(enumerate(model_labels))}))
    if saved_model_policy is not None:
        (root / "saved_model" / "1" / "assets.extra" / "tfbert").mkdir(parents=True)
        (root / "saved_model" / "1" / "saved_model.pb").write_bytes(b"")
        (root / "saved_model" / "1" / "assets.extra" / "tfbert" / "metadata.json").write_text(
            json.dumps({"labels": list(model_labels), "compute_policy": saved_model_policy}))
    if compact_labels is not None:
        (root / "compact").mkdir()
        (root / "compact" / MODEL_FILE).write_bytes(b"")
        recorded = {"test_label_agreement": agreement} if agreement is not None else {}
        settings = {"labels": list(compact_labels), **recorded}
        (root / "compact" / "tfbert.json").write_text(json.dumps(settings))
    return root


@pytest.mark.parametrize("agreement, compact_labels, saved_model_policy, explain, kind, reasons", [
    (1.0, ("neg", "pos"), "float32", False, "compact", ["agrees with the full model on 1.000"]),
    (MIN_LABEL_AGREEMENT, ("neg", "pos"), "float32", False, "compact", [">= 0.99"]),
    (0.985, ("neg", "pos"), "float32", False, "saved_model",
     ["0.985 of the test labels (< 0.99)", "saved_model/ computes in float32 as model/ does"]),
    (1.0, ("pos", "neg"), "float32", False, "saved_model", ["labels ['pos', 'neg'] differ"]),
    (None, ("neg", "pos"), "float32", False, "saved_model", ["records no test label agreement"]),
    (None, None, "float32", False, "saved_model", ["no compact export", "starts faster"]),
    (1.0, ("neg", "pos"), "float32", True, "model", ["--explain needs model/"]),
    (0.985, ("neg", "pos"), "mixed_bfloat16", False, "model",
     ["(< 0.99)", "saved_model/ computes in mixed_bfloat16, model/ in float32"]),
    (None, None, None, False, "model", ["no compact export", "the run has no saved_model/"]),
])
def test_a_run_folder_answers_with_the_fastest_export_that_gives_the_models_labels(
        tmp_path, agreement, compact_labels, saved_model_policy, explain, kind, reasons):
    run = _run_folder(tmp_path / "run", agreement, compact_labels, saved_model_policy=saved_model_policy)
    choice = choose_export(run, explain=explain)
    assert (choice.kind, choice.path) == (kind, run / kind)
    for reason in reasons:
        assert reason in choice.reason


def test_a_saved_model_without_its_metadata_does_not_answer_for_the_run(tmp_path):
    run = _run_folder(tmp_path / "run", compact_labels=None)
    (run / "saved_model" / "1" / "assets.extra" / "tfbert" / "metadata.json").unlink()
    assert choose_export(run).kind == "model"
    assert "saved_model/ computes in an unrecorded precision" in choose_export(run).reason


def test_an_export_folder_is_used_as_given(tmp_path):
    run = _run_folder(tmp_path / "run", agreement=0.5)
    assert choose_export(run / "compact") == choose_export(run / "compact", explain=True)
    assert (choose_export(run / "compact").kind, choose_export(run / "compact").path) == ("compact", run / "compact")
    for folder in (run / "saved_model", run / "model", tmp_path / "missing"):
        assert (choose_export(folder).kind, choose_export(folder).path) == ("as_given", folder)


# Runs infer.py in this process as a script would, then reports which heavy libraries it imported.
_RUNNER = """
import json, os, runpy, sys
sys.argv, sys.path[0] = ["infer.py", *sys.argv[1:]], %r  # as `python infer.py ...` starts
import tfbert.cli
tfbert.cli.exit_now = sys.exit  # end by SystemExit, so that the report below gets written
try:
    runpy.run_path(%r, run_name="__main__")
except SystemExit as stop:
    code = stop.code
heavy = ("tensorflow", "transformers", "datasets", "scipy", "tf_keras", "keras", "pandas", "tensorflow_text")
print(json.dumps({"exit": code, "imported": sorted(m for m in heavy if m in sys.modules),
                  "frozen_weights": os.environ.get("TF_ONEDNN_ASSUME_FROZEN_WEIGHTS")}), file=sys.stderr)
""" % (str(ROOT), str(ROOT / "infer.py"))


def _infer_in_runner(*args: str, cwd: Path) -> tuple[list[str], dict, str]:
    completed = subprocess.run([sys.executable, "-c", _RUNNER, *args], cwd=cwd, capture_output=True, text=True,
                               timeout=600)
    *log, last = completed.stderr.strip().splitlines()
    return completed.stdout.splitlines(), json.loads(last), "\n".join(log)


@pytest.fixture(scope="module")
def compact_run(tiny_model_dir, tmp_path_factory):
    """A trained tiny run with a compact export of every layer (hidden size 16: TFLite keeps its small matrices in
    float32, so the compact model answers as the model does)."""
    work = tmp_path_factory.mktemp("first_prediction")
    write_jsonl(work / "reviews.jsonl", make_rows(150))
    completed = run_cli("train.py", "--train_file", "reviews.jsonl", "--model_name", str(tiny_model_dir),
                        "--epochs", "8", "--lr", "3e-3", "--batch_size", "16", "--max_length", "32",
                        "--precision", "float32", "--patience", "0", "--deterministic",
                        "--export_tflite", "--compact_layers", "all", "--quiet", cwd=work)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return work, next((work / "output" / "reviews").glob("*/*"))


@pytest.mark.slow
def test_train_records_the_compact_label_agreement(compact_run):
    from tfbert.predictors import TFLitePredictor

    work, run = compact_run
    recorded = json.loads((run / "compact" / "tfbert.json").read_text())["test_label_agreement"]
    assert json.loads((run / "metrics.json").read_text())["compact"]["test_label_agreement"] == recorded
    rows = make_rows(150)
    predictions = [json.loads(line) for line in (run / "predictions_test.jsonl").read_text().splitlines()]
    probabilities = TFLitePredictor(run / "compact").predict([rows[p["row_id"]]["text"] for p in predictions])
    assert recorded == label_agreement(probabilities, [p["predicted"] for p in predictions], ["neg", "neu", "pos"])
    assert recorded >= MIN_LABEL_AGREEMENT  # float32 weights: the same model


@pytest.mark.slow
def test_infer_answers_from_compact_without_tensorflow_as_the_saved_model_does(compact_run):
    from tfbert.predictors import SavedModelPredictor, TFLitePredictor

    work, run = compact_run
    texts = ["great phone really good", "awful broken item", "okay fine item", "この商品は最高です"]
    saved_model = SavedModelPredictor(run / "saved_model").predict(texts)
    with_transformers = TFLitePredictor(run / "compact", use_light_tokenizer=False)
    assert with_transformers.tokenizer is not None
    compact = with_transformers.predict(texts)
    # int8 embeddings move probabilities by ~1e-3: labels are compared where the SavedModel's top two differ more.
    top_two = np.sort(saved_model, axis=1)[:, -2:]
    clear = top_two[:, 1] - top_two[:, 0] > 0.005
    assert clear.sum() >= 2, saved_model
    for model in (run, run / "compact"):
        lines, report, log = _infer_in_runner(*texts, "--json", "--model", str(model), "--verbose", cwd=work)
        assert report == {"exit": 0, "imported": [], "frozen_weights": None}, log[-3000:]
        answers = [json.loads(line) for line in lines]
        assert [a["label"] for a, c in zip(answers, clear) if c] == \
            [["neg", "neu", "pos"][i] for i in saved_model[clear].argmax(axis=1)]
        np.testing.assert_allclose([a["confidence"] for a in answers], compact.max(axis=1), atol=1e-6)
        np.testing.assert_allclose([a["confidence"] for a in answers], saved_model.max(axis=1), atol=0.01)
        assert f"answering with {run / 'compact'}" in log
    assert "agrees with the full model on 1.000 of the test labels" in _infer_in_runner(
        "good", "--model", str(run), "--verbose", cwd=work)[2]


@pytest.mark.slow
def test_infer_without_a_good_compact_export_uses_the_saved_model_and_says_why(compact_run):
    from tfbert.predictors import KerasPredictor

    work, run = compact_run
    settings = run / "compact" / "tfbert.json"
    original = settings.read_text()
    try:
        record_agreement(run / "compact", 0.9)
        lines, report, log = _infer_in_runner("great phone", "--json", "--model", str(run), "--verbose", cwd=work)
    finally:
        settings.write_text(original)
    # TensorFlow (which imports scipy) for the SavedModel, but not transformers, datasets, Keras (with pandas) or
    # tensorflow-text's Python API (its op libraries only)
    assert report == {"exit": 0, "imported": ["scipy", "tensorflow"], "frozen_weights": "1"}, log[-3000:]
    assert f"answering with {run / 'saved_model'}: compact/ agrees with the full model on 0.900" in log
    answer = json.loads(lines[0])
    model = KerasPredictor(run / "model").predict(["great phone"])[0]
    assert answer["label"] == ["neg", "neu", "pos"][model.argmax()]
    assert answer["confidence"] == pytest.approx(float(model.max()), abs=1e-5)
    quiet = run_cli("infer.py", "great phone", "--model", str(run), cwd=work)
    assert quiet.returncode == 0 and "answering with" not in quiet.stderr


@pytest.mark.slow
@pytest.mark.parametrize("n_texts", [3, 70])  # one batch with the graph optimiser off; two with it on
def test_infer_from_the_saved_model_answers_as_the_saved_model_does(compact_run, n_texts):
    """infer.py lets oneDNN keep each MatMul's weights laid out (runtime.import_tensorflow(frozen_weights=True)):
    its answers over several batches are those of the SavedModel predicted in this process, which was not told."""
    import os

    from tfbert.predictors import SavedModelPredictor

    work, run = compact_run
    texts = [f"{word} item number {i}" for i, word in zip(range(n_texts), ["great", "awful", "okay", "fine"] * 20)]
    lines, report, log = _infer_in_runner(*texts, "--json", "--model", str(run / "saved_model"), cwd=work)
    assert (report["exit"], report["frozen_weights"]) == (0, "1"), log[-3000:]
    assert "TF_ONEDNN_ASSUME_FROZEN_WEIGHTS" not in os.environ
    expected = SavedModelPredictor(run / "saved_model").predict(texts)
    answers = [json.loads(line) for line in lines]
    assert [a["label"] for a in answers] == [["neg", "neu", "pos"][i] for i in expected.argmax(axis=1)]
    np.testing.assert_allclose([a["confidence"] for a in answers], expected.max(axis=1), atol=1e-6)


@pytest.mark.slow
def test_parsing_the_command_lines_imports_no_transformers():
    code = ("import sys, tfbert\nfrom tfbert.cli import parse_evaluate_args, parse_infer_args, parse_serve_args\n"
            "parse_infer_args(['a', '--json']); parse_serve_args([]); "
            "parse_evaluate_args(['--model', 'm', '--dataset', 'ag_news'])\n"
            "from tfbert import runtime\nruntime.quiet_libraries()\n"
            "print(sorted(m for m in ('transformers', 'datasets', 'tensorflow') if m in sys.modules))")
    completed = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip() == "[]"
