"""serve.py on a compact export: the SavedModel's signatures and outputs, answered by LiteRT without TensorFlow."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_first_prediction import _run_folder, compact_run  # noqa: F401  (compact_run is a fixture)
from test_serving import BAD_REQUESTS, ROOT, call, free_port

from tfbert.compact_serving import signature_outputs
from tfbert.errors import TfbertError
from tfbert.model_choice import choose_served_export

TEXTS = ["great phone really good", "awful broken item", "この商品は最高です", ""]


@pytest.mark.parametrize("agreement, export, kind, reason", [
    (1.0, "auto", "compact", "agrees with the full model on 1.000"),
    (0.985, "auto", "saved_model", "0.985 of the test labels (< 0.99)"),
    (None, "auto", "saved_model", "records no test label agreement"),
    (0.985, "compact", "compact", "--export compact"),
    (1.0, "saved_model", "saved_model", "--export saved_model"),
])
def test_serve_takes_compact_where_infer_would_unless_told(tmp_path, agreement, export, kind, reason):
    run = _run_folder(tmp_path / "run", agreement)
    choice = choose_served_export(run, export)
    assert (choice.kind, choice.path) == (kind, run / kind)
    assert reason in choice.reason


def test_serve_refuses_an_export_that_is_not_there(tmp_path):
    run = _run_folder(tmp_path / "run", compact_labels=None)
    with pytest.raises(TfbertError, match="has no compact export; train with --export_tflite"):
        choose_served_export(run, "compact")
    with pytest.raises(TfbertError, match="--export compact: .* is a saved model export"):
        choose_served_export(run / "saved_model", "compact")
    other = _run_folder(tmp_path / "other", agreement=1.0)
    assert choose_served_export(other / "compact").path == other / "compact"
    assert choose_served_export(other / "saved_model").kind == "saved_model"
    with pytest.raises(TfbertError, match="--export saved_model: .* is a compact export"):
        choose_served_export(other / "compact", "saved_model")


@pytest.mark.parametrize("task", ["multi_label", "regression"])
def test_compact_outputs_are_the_saved_models_task_outputs(task):
    import tensorflow as tf

    from tfbert.task_export import task_outputs
    from tfbert.tasks import activate

    labels, thresholds = ["a", "b", "c"], [0.3, 0.5, 0.7]
    logits = np.random.default_rng(0).normal(size=(6, 1 if task == "regression" else 3)).astype(np.float32)
    expected = task_outputs(task, tf.constant(logits), tf.constant(labels), tf.constant(thresholds))
    got = signature_outputs(task, activate(task, logits), labels, thresholds)
    assert set(got) == set(expected)
    for key, value in expected.items():
        value = value.numpy()
        if value.dtype == object:
            assert got[key].tolist() == [v.decode() if isinstance(v, bytes) else [w.decode() for w in v]
                                         for v in value.tolist()], key
        else:
            np.testing.assert_allclose(got[key], value, atol=1e-6, err_msg=key)
    if task == "multi_label":
        assert got["label_mask"].any() and not got["label_mask"].all()  # the thresholds decide something here


def test_single_label_outputs():
    got = signature_outputs("single_label", np.array([[0.2, 0.8], [0.7, 0.3]]), ["neg", "pos"], None)
    assert got["label"].tolist() == ["pos", "neg"] and got["label_id"].tolist() == [1, 0]
    assert got["label_names"].tolist() == [["neg", "pos"]] * 2 and got["probabilities"].dtype == np.float32


@pytest.fixture(scope="module")
def servers(compact_run):  # noqa: F811
    """serve.py on the run (auto: its compact export) and with --export saved_model, both ready."""
    _, run = compact_run
    started = []
    for export in ("auto", "saved_model"):
        port = free_port()
        process = subprocess.Popen([sys.executable, str(ROOT / "serve.py"), "--model", str(run), "--port", str(port),
                                    "--model_name", "demo", "--max_batch", "8", "--max_body_bytes", "20000",
                                    "--export", export],
                                   cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        started.append((process, f"http://127.0.0.1:{port}"))
    try:
        for process, url in started:
            for _ in range(480):
                try:
                    if call(f"{url}/readyz")[0] == 200:
                        break
                except OSError:
                    assert process.poll() is None, process.stdout.read()
                    time.sleep(0.5)
        yield run, {"compact": started[0], "saved_model": started[1]}
    finally:
        for process, _ in started:
            process.terminate()
            process.wait(timeout=30)


def _maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.slow
def test_a_compact_export_is_served_without_tensorflow_with_the_saved_models_signatures(servers):
    from tfbert.predictors import TFLitePredictor

    run, started = servers
    (compact, compact_url), (full, full_url) = started["compact"], started["saved_model"]
    assert "libtensorflow_framework" not in _maps(compact.pid) and "libtensorflow_framework" in _maps(full.pid)
    metadata = [call(f"{url}/v1/models/demo/metadata")[1]["metadata"]["signature_def"]["signature_def"]
                for url in (compact_url, full_url)]
    assert metadata[0] == metadata[1]  # names, inputs and outputs with their dtypes and ranks

    expected = TFLitePredictor(run / "compact").predict(TEXTS)
    answers = {}
    for name, url in (("compact", compact_url), ("saved_model", full_url)):
        status, body = call(f"{url}/v1/models/demo:predict", json.dumps({"instances": TEXTS}).encode())
        assert status == 200, body
        answers[name] = body["predictions"]
    assert [set(p) for p in answers["compact"]] == [set(p) for p in answers["saved_model"]]
    np.testing.assert_allclose([p["probabilities"] for p in answers["compact"]], expected, atol=1e-6)
    assert [p["label"] for p in answers["compact"]] == [["neg", "neu", "pos"][i] for i in expected.argmax(axis=1)]
    # compact/ here keeps every layer in float32 (hidden size 16): the SavedModel's answers within int8 embeddings
    np.testing.assert_allclose([p["probabilities"] for p in answers["compact"]],
                               [p["probabilities"] for p in answers["saved_model"]], atol=0.01)

    # Trained on single texts: neither export has predict_text_pair, and both servers say so alike.
    pairs = ["good", "", "bad item", "ok"]
    for url in (compact_url, full_url):
        status, body = call(f"{url}/v1/models/demo:predict", json.dumps(
            {"inputs": {"text": TEXTS, "text_pair": pairs}}).encode())
        assert status == 400 and "text_pair: this model was trained on single texts" in body["error"], body


@pytest.mark.slow
def test_a_compact_export_offers_pairs_as_its_record_says_wherever_it_is_copied(compact_run, tmp_path):  # noqa: F811
    from tfbert.compact_serving import CompactModel
    from tfbert.inputs import check_pairs
    from tfbert.predictors import TFLitePredictor

    _, run = compact_run
    settings = json.loads((run / "compact" / "tfbert.json").read_text())
    assert settings["text_pairs"] is False  # its run trained on single texts
    deployed = tmp_path / "deployed"  # copied away from its run, which recorded it in config.json only before
    shutil.copytree(run / "compact", deployed)
    assert "predict_text_pair" not in CompactModel(deployed).signatures
    with pytest.raises(TfbertError, match="was trained on single texts"):
        check_pairs(deployed, ["a second text"])

    paired = tmp_path / "paired"  # the same file recorded as a model of pairs
    shutil.copytree(run / "compact", paired)
    (paired / "tfbert.json").write_text(json.dumps({**settings, "text_pairs": True}))
    model = CompactModel(paired)
    assert set(model.signatures) == {"serving_default", "predict_text_pair", "predict_ids"}
    pairs = ["good", "", "bad item", "ok"]
    answers = model.run("predict_text_pair", {"text": TEXTS, "text_pair": pairs})
    np.testing.assert_allclose(answers["probabilities"], TFLitePredictor(paired).predict(TEXTS, pairs), atol=1e-6)

    older = tmp_path / "older_run"  # a folder written before the record: its run's config.json says
    shutil.copytree(run / "compact", older / "compact")
    (older / "compact" / "tfbert.json").write_text(json.dumps({k: v for k, v in settings.items() if k != "text_pairs"}))
    config = json.loads((run / "config.json").read_text())
    (older / "config.json").write_text(json.dumps({**config, "data": {**config["data"], "text_pair": True}}))
    assert "predict_text_pair" in CompactModel(older / "compact").signatures


@pytest.mark.slow
def test_token_ids_and_bad_requests_on_a_compact_server(servers):
    from transformers import AutoTokenizer

    from tfbert.predictors import TFLitePredictor

    run, started = servers
    url = started["compact"][1]
    tokenizer = AutoTokenizer.from_pretrained(run / "compact" / "tokenizer")
    encoded = tokenizer(TEXTS[:3], padding=True, truncation=True, max_length=32)
    status, body = call(f"{url}/v1/models/demo:predict", json.dumps(
        {"signature_name": "predict_ids", "inputs": dict(encoded)}).encode())
    assert status == 200, body
    np.testing.assert_allclose(body["outputs"]["probabilities"], TFLitePredictor(run / "compact").predict(TEXTS[:3]),
                               atol=1e-5)  # padding left out as the predictor never adds it
    predict_ids_requests = [
        (json.dumps({"signature_name": "predict_ids", "inputs": {
            "input_ids": [[1, 2]], "attention_mask": [[0, 0]], "token_type_ids": [[0, 0]]}}).encode(), 400, "at least"),
        (json.dumps({"signature_name": "predict_ids", "inputs": {
            "input_ids": [[1, 2]], "attention_mask": [[1]], "token_type_ids": [[0, 0]]}}).encode(), 400, "same shape"),
    ]
    for request, status, fragment in BAD_REQUESTS + predict_ids_requests:  # the SavedModel server's, and these
        code, answer = call(f"{url}/v1/models/demo:predict", request)
        assert code == status and fragment in answer["error"], (request, answer)
    assert call(f"{url}/healthz")[0] == 200
