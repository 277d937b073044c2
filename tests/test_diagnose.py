"""python -m tfbert.diagnose: real versions and free space, and a Hub check that neither hangs nor ignores offline mode.

The Hub is played by sockets on 127.0.0.1: a closed port, a port that never answers, a tiny HTTP server.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time

import pytest

from tfbert.diagnose import check_hub, free_space, main

PROXY_VARIABLES = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


@pytest.fixture()
def online(monkeypatch):
    """No offline flag (the test command sets one) and no proxy between the check and 127.0.0.1."""
    for name in ("HF_HUB_OFFLINE", "HF_ENDPOINT", *PROXY_VARIABLES):
        monkeypatch.delenv(name, raising=False)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture()
def silent_port():
    """A port that accepts connections (the kernel's backlog) but never answers a request."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        yield server


@pytest.fixture()
def http_port():
    class Answer(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_json_report_has_real_versions_devices_and_free_space(online, capsys):
    import tensorflow as tf

    assert main(["--json", "--hub_url", f"http://127.0.0.1:{_closed_port()}", "--hub_timeout", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"versions", "devices", "precision", "caches", "hub", "seconds"}
    assert report["versions"]["tensorflow"] == tf.__version__
    expected_packages = {"python", "keras", "tf-keras", "transformers", "datasets", "tokenizers", "keras-hub"}
    assert expected_packages <= set(report["versions"])
    assert report["versions"]["transformers"] and report["versions"]["tf-keras"]
    assert report["devices"]["cpu"]["cores"] >= 1 and isinstance(report["devices"]["gpus"], list)
    assert report["precision"]["auto_policy"] in ("float32", "mixed_bfloat16", "mixed_float16")
    assert set(report["caches"]) == {"hf_home", "hf_hub_cache", "datasets_cache", "tfbert_cache", "tmpdir"}
    for name, space in report["caches"].items():
        assert space["free_bytes"] > 0 and space["free_gib"] >= 0, name
    assert report["hub"]["status"] == "unreachable"


def test_text_report_names_every_section(online, capsys):
    assert main(["--hub_url", f"http://127.0.0.1:{_closed_port()}", "--hub_timeout", "1"]) == 0
    text = capsys.readouterr().out
    for heading in ("versions", "devices", "precision", "caches", "hub"):
        assert f"\n{heading}\n" in f"\n{text}"
    assert "unreachable (" in text and "GiB free" in text


def test_offline_mode_sends_nothing(monkeypatch, silent_port):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = check_hub(f"http://127.0.0.1:{silent_port.getsockname()[1]}", timeout=1.0)
    assert result["status"] == "offline"
    silent_port.settimeout(0.2)
    with pytest.raises(socket.timeout):  # no connection is waiting to be accepted
        silent_port.accept()


def test_a_closed_port_is_unreachable_at_once(online):
    started = time.perf_counter()
    result = check_hub(f"http://127.0.0.1:{_closed_port()}", timeout=3.0)
    assert result["status"] == "unreachable" and "refused" in result["detail"].lower()
    assert time.perf_counter() - started < 2


def test_a_silent_server_is_given_up_after_the_timeout(online, silent_port):
    started = time.perf_counter()
    result = check_hub(f"http://127.0.0.1:{silent_port.getsockname()[1]}", timeout=0.5)
    assert result["status"] == "unreachable" and "timed out" in result["detail"]
    assert time.perf_counter() - started < 2


def test_hf_endpoint_names_the_hub_and_any_answer_means_reachable(online, monkeypatch, http_port):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{http_port}")
    result = check_hub(timeout=2.0)
    assert (result["url"], result["status"], result["detail"]) == (f"http://127.0.0.1:{http_port}", "reachable",
                                                                  "HTTP 200")


def test_free_space_of_a_folder_not_made_yet(tmp_path):
    space = free_space(str(tmp_path / "not" / "made"))
    assert space["free_bytes"] > 0 and space["exists"] is False
