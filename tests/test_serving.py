"""serve.py as a real process on a loopback port, checked against TF Serving's REST shapes and infer.py."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tfbert import modeling
from tfbert.export import export_saved_model
from tfbert.predictors import SavedModelPredictor

pytestmark = pytest.mark.slow  # serve.py as a subprocess

ROOT = Path(__file__).resolve().parent.parent
TEXTS = ["great phone really good", "awful broken item", "この商品は最高です", ""]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_py(base: Path, *flags: str):
    """serve.py on ``base`` (a SavedModel) on a free port: yields its URL once it is ready; stops it after."""
    port = free_port()
    process = subprocess.Popen([sys.executable, str(ROOT / "serve.py"), "--model", str(base), "--port", str(port),
                                *flags], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if call(f"{url}/readyz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def call(url: str, body: bytes | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("serve") / "saved_model"
    model = modeling.load_for_training(tiny_model_dir, ["neg", "neu", "pos"])
    export_saved_model(model, modeling.load_tokenizer(tiny_model_dir), id2label={0: "neg", 1: "neu", 2: "pos"},
                       max_length=16, base_dir=base)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "serve.py"), "--model", str(base), "--port", str(port), "--model_name", "demo",
         "--max_body_bytes", "20000", "--max_batch", "8"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if call(f"{url}/readyz")[0] == 200:
                break
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.5)
        assert process.poll() is None, process.stdout.read()
    else:
        process.kill()
        pytest.fail("server did not become ready")
    yield {"url": url, "base": base}
    process.terminate()
    process.wait(timeout=30)


def test_predict_row_and_columnar_formats_agree_with_the_saved_model(server):
    expected = SavedModelPredictor(server["base"]).predict(TEXTS)
    status, row = call(f"{server['url']}/v1/models/demo:predict", json.dumps({"instances": TEXTS}).encode())
    assert status == 200
    assert [p["label"] for p in row["predictions"]] == [["neg", "neu", "pos"][i] for i in expected.argmax(axis=1)]
    np.testing.assert_allclose([p["probabilities"] for p in row["predictions"]], expected, atol=1e-6)
    assert row["predictions"][0]["label_names"] == ["neg", "neu", "pos"]
    status, columnar = call(f"{server['url']}/v1/models/demo/versions/1:predict",
                            json.dumps({"inputs": {"text": TEXTS}}).encode())
    assert status == 200
    np.testing.assert_allclose(columnar["outputs"]["probabilities"], expected, atol=1e-6)
    assert columnar["outputs"]["label_id"] == expected.argmax(axis=1).tolist()
    status, objects = call(f"{server['url']}/v1/models/demo:predict",
                           json.dumps({"instances": [{"text": t} for t in TEXTS]}).encode())
    assert status == 200 and [p["label"] for p in objects["predictions"]] == [p["label"] for p in row["predictions"]]


def test_status_and_metadata(server):
    status, body = call(f"{server['url']}/v1/models/demo")
    assert status == 200
    assert body["model_version_status"] == [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]
    status, body = call(f"{server['url']}/v1/models/demo/metadata")
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert status == 200 and set(signatures) == {"serving_default", "predict_ids", "predict_text_pair"}
    assert signatures["serving_default"]["inputs"]["text"]["dtype"] == "DT_STRING"
    assert set(signatures["serving_default"]["outputs"]) == {"probabilities", "label_id", "label", "label_names"}
    assert call(f"{server['url']}/v1/models/other")[0] == 404
    assert call(f"{server['url']}/v1/models/demo/versions/7")[0] == 404


# Bad bodies for a server started with --max_body_bytes 20000 --max_batch 8: (body, HTTP status, error fragment).
BAD_REQUESTS = [
    (b"{not json", 400, "malformed JSON"),
    (b'{"instances": []}', 400, "non-empty"),
    (b'{"instances": [1, 2]}', 400, "string"),
    (b'{"instances": ["a"], "inputs": ["a"]}', 400, "exactly one"),
    (b'{"instances": ["a"], "signature_name": "nope"}', 400, "unknown signature_name"),
    (b'{"instances": [{"text": "a", "extra": "b"}]}', 400, "unknown input"),
    (b'{"instances": [["a"]]}', 400, "rank"),
    (b'{"inputs": {"text": "a"}}', 400, "must be a list"),
    (b'{"instances": [{"b64": "%%%"}]}', 400, "base64"),
    (b'[1, 2]', 400, "JSON object"),
    (b'{"instances": ["\\ud800"]}', 400, "string"),
    (json.dumps({"instances": ["a"] * 9}).encode(), 400, "limit of 8"),
    (json.dumps({"instances": ["x" * 30000]}).encode(), 413, "over 20000 bytes"),
]


@pytest.mark.parametrize("body, status, fragment", BAD_REQUESTS)
def test_bad_requests_get_tf_serving_errors_and_the_server_stays_up(server, body, status, fragment):
    code, answer = call(f"{server['url']}/v1/models/demo:predict", body)
    assert code == status and fragment in answer["error"], answer
    assert call(f"{server['url']}/healthz")[0] == 200


def test_infer_through_the_server_equals_infer_on_the_saved_model(server):
    outputs = []
    for source in (["--server", f"{server['url']}/v1/models/demo"], ["--model", str(server["base"])]):
        completed = subprocess.run([sys.executable, str(ROOT / "infer.py"), *TEXTS[:3], "--json", "--top_k", "3",
                                    *source], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert completed.returncode == 0, completed.stderr[-2000:]
        outputs.append([json.loads(line) for line in completed.stdout.splitlines()])
    assert [o["label"] for o in outputs[0]] == [o["label"] for o in outputs[1]]
    for a, b in zip(*outputs):
        # infer.py prints six decimals: a 1e-7 difference between the two paths can round one unit apart.
        assert a["confidence"] == pytest.approx(b["confidence"], abs=2e-6)
        assert [t["label"] for t in a["top_k"]] == [t["label"] for t in b["top_k"]]


def test_server_predictor_and_pairs_equal_the_saved_model(server):
    from tfbert.predictors import ServerPredictor

    local = SavedModelPredictor(server["base"], batch_size=3)
    remote = ServerPredictor(f"{server['url']}/v1/models/demo", batch_size=3)
    np.testing.assert_allclose(remote.predict(TEXTS), local.predict(TEXTS), atol=1e-6)
    assert remote.labels == local.labels == ["neg", "neu", "pos"]
    pairs = ["good", "", "bad item", "ok"]
    np.testing.assert_allclose(remote.predict(TEXTS, pairs), local.predict(TEXTS, pairs), atol=1e-6)
    # {"text", "text_pair"} instances without a signature_name go to predict_text_pair too
    status, body = call(f"{server['url']}/v1/models/demo:predict", json.dumps(
        {"instances": [{"text": t, "text_pair": p} for t, p in zip(TEXTS, pairs)]}).encode())
    assert status == 200
    np.testing.assert_allclose([p["probabilities"] for p in body["predictions"]], local.predict(TEXTS, pairs), atol=1e-6)


def test_b64_strings_and_token_ids(server):
    import base64

    from transformers import AutoTokenizer

    expected = SavedModelPredictor(server["base"]).predict(TEXTS[:2])
    b64 = [{"b64": base64.b64encode(t.encode()).decode()} for t in TEXTS[:2]]
    status, body = call(f"{server['url']}/v1/models/demo:predict", json.dumps({"instances": b64}).encode())
    assert status == 200
    np.testing.assert_allclose([p["probabilities"] for p in body["predictions"]], expected, atol=1e-6)
    tokenizer = AutoTokenizer.from_pretrained(server["base"] / "1" / "assets.extra" / "tfbert" / "tokenizer")
    encoded = tokenizer(TEXTS[:2], padding=True, truncation=True, max_length=16)
    status, body = call(f"{server['url']}/v1/models/demo:predict", json.dumps(
        {"signature_name": "predict_ids", "inputs": dict(encoded)}).encode())
    assert status == 200
    np.testing.assert_allclose(body["outputs"]["probabilities"], expected, atol=1e-5)


def test_every_signature_runs_once_before_the_server_answers(server):
    from tfbert.serving import LoadedModel

    loaded = LoadedModel(server["base"])
    assert sorted(loaded.warmed_up) == sorted(loaded.signatures) == ["predict_ids", "predict_text_pair",
                                                                      "serving_default"]
