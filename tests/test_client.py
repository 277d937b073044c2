"""The REST client against our real server (tfbert.serving's app under uvicorn, in this process on a loopback
port): requests split by batch_size, and HTTP and connection failures mapped to one-line TfbertErrors."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

import pytest

from tfbert import modeling
from tfbert.client import RestClient
from tfbert.errors import TfbertError
from tfbert.export import export_saved_model

LABELS = {0: "neg", 1: "neu", 2: "pos"}
TEXTS = ["great phone really good", "awful broken item", "okay item", "", "この商品は最高です"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def export_tiny(tiny_model_dir: Path, base: Path) -> Path:
    """A SavedModel base path with one version of a random tiny BERT classifier."""
    model = modeling.load_for_training(tiny_model_dir, list(LABELS.values()))
    export_saved_model(model, modeling.load_tokenizer(tiny_model_dir), id2label=LABELS, max_length=16, base_dir=base)
    return base


@contextlib.contextmanager
def serve_in_thread(base: Path, max_batch: int = 256, model_name: str = "demo", batch_timeout_ms=None):
    """tfbert.serving's app for ``base`` on a free loopback port (server-side batching with ``batch_timeout_ms``);
    yields its /v1/models/<name> URL and the list of predict request paths the server received."""
    import uvicorn

    from tfbert.serving import ServerLimits, create_app

    app = create_app(base, model_name, ServerLimits(max_batch=max_batch), batch_timeout_ms=batch_timeout_ms)
    received: list[str] = []

    async def counting(scope, receive, send):  # sees every request before the app does
        if scope["type"] == "http" and scope["path"].endswith(":predict"):
            received.append(scope["path"])
        await app(scope, receive, send)

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(counting, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started:
        assert thread.is_alive() and time.time() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/v1/models/{model_name}", received
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    base = export_tiny(tiny_model_dir, tmp_path_factory.mktemp("client") / "saved_model")
    with serve_in_thread(base, max_batch=2) as (url, received):
        yield {"url": url, "received": received}


@pytest.mark.slow  # exports a SavedModel (and a compact model) first
def test_requests_hold_at_most_batch_size_instances(server):
    client = RestClient(server["url"])
    server["received"].clear()
    answers = list(client.predict_batches(TEXTS, batch_size=2))
    assert [len(predictions) for predictions in answers] == [2, 2, 1]
    assert len(server["received"]) == 3  # one request per batch, each within the server's limit of 2
    assert all(set(p) == {"probabilities", "label_id", "label", "label_names"} for batch in answers for p in batch)
    pairs = [{"text": t, "text_pair": "okay"} for t in TEXTS[:3]]
    answers = list(client.predict_batches(pairs, batch_size=2, signature_name="predict_text_pair"))
    assert [len(predictions) for predictions in answers] == [2, 1]
    assert list(client.predict_batches([], batch_size=2)) == []  # no texts, no request


@pytest.mark.slow  # exports a SavedModel (and a compact model) first
def test_http_errors_become_one_line_tfbert_errors(server):
    with pytest.raises(TfbertError, match=r"HTTP 400: .*over this server's limit of 2") as error:
        list(RestClient(server["url"]).predict_batches(TEXTS, batch_size=3))
    assert "\n" not in str(error.value) and server["url"] in str(error.value)
    other = server["url"].rsplit("/", 1)[0] + "/other"
    with pytest.raises(TfbertError, match="HTTP 404: .*Servable not found"):
        RestClient(other).post({"instances": ["good"]})
    with pytest.raises(TfbertError, match="HTTP 400: .*unknown signature_name"):
        RestClient(server["url"]).post({"signature_name": "nope", "instances": ["good"]})


def test_no_server_and_a_wrong_url_are_clear_errors():
    with pytest.raises(TfbertError, match="cannot connect .*is the server running"):
        RestClient(f"http://127.0.0.1:{free_port()}/v1/models/demo", timeout=5).post({"instances": ["good"]})
    with pytest.raises(TfbertError, match="expected a URL like http://HOST:8501/v1/models/NAME"):
        RestClient("http://127.0.0.1:8501/predict")
