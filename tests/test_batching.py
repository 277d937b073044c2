"""Server-side batching: concurrent requests share model calls and each gets exactly its own answers; a batch
never waits for more than its timeout; an error reaches only the request at fault."""

from __future__ import annotations

import json
import threading
import urllib.request

import numpy as np
import pytest

from tfbert.batching import RequestBatcher


def recording_run(calls: list, gate: threading.Event | None = None):
    """A model that answers each row with its own function of the row, recording the rows of every call."""
    def run(key, feeds):
        calls.append(len(feeds["x"]))
        if gate is not None:
            gate.wait(timeout=30)
        if (feeds["x"] < 0).any():
            raise ValueError("negative input")
        return {"y": feeds["x"] * 10 + 1, "key": np.array([key] * len(feeds["x"]))}
    return run


def test_requests_queued_together_share_one_call_and_get_their_own_rows():
    calls, gate = [], threading.Event()
    batcher = RequestBatcher(recording_run(calls, gate), max_batch=64, timeout_s=0.0)
    first = batcher.submit("s", {"x": np.array([1])})  # its call blocks on the gate while the others queue up
    while not calls:
        threading.Event().wait(0.01)
    requests = [np.arange(i, i + 1 + i % 3) for i in range(2, 9)]
    futures = []
    threads = [threading.Thread(target=lambda x=x: futures.append((x, batcher.submit("s", {"x": x}))))
               for x in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    gate.set()
    assert first.result(timeout=30)["y"].tolist() == [11]
    for x, future in futures:
        assert future.result(timeout=30)["y"].tolist() == (x * 10 + 1).tolist()
    batcher.close()
    assert calls == [1, sum(len(x) for x in requests)]  # the 7 queued requests: one call


def test_batches_hold_at_most_max_batch_rows_and_one_signature():
    calls, gate = [], threading.Event()
    batcher = RequestBatcher(recording_run(calls, gate), max_batch=5, timeout_s=0.0)
    blocker = batcher.submit("a", {"x": np.array([0])})
    while not calls:
        threading.Event().wait(0.01)
    futures = [batcher.submit(key, {"x": np.full(rows, rows)}) for key, rows in
               [("a", 3), ("b", 2), ("a", 3), ("a", 2), ("b", 4)]]
    gate.set()
    answers = [future.result(timeout=30) for future in [blocker] + futures]
    batcher.close()
    assert [a["key"].tolist() for a in answers] == [["a"], ["a"] * 3, ["b"] * 2, ["a"] * 3, ["a"] * 2, ["b"] * 4]
    # Oldest first: a 3+2 (the second a 3 does not fit), b 2 (b 4 does not fit), a 3, b 4.
    assert calls == [1, 5, 2, 3, 4]


def test_a_lone_request_waits_only_its_timeout_and_a_full_batch_not_at_all():
    calls = []
    batcher = RequestBatcher(recording_run(calls), max_batch=4, timeout_s=0.05)
    assert batcher.submit("s", {"x": np.array([1, 2])}).result(timeout=30)["y"].tolist() == [11, 21]
    batcher.close()
    # A timeout far longer than the test: only a full batch can be answered before it.
    batcher = RequestBatcher(recording_run(calls), max_batch=4, timeout_s=3600)
    futures = [batcher.submit("s", {"x": np.array([i, i])}) for i in range(2)]
    assert [f.result(timeout=30)["y"].tolist() for f in futures] == [[1, 1], [11, 11]]
    batcher.close()
    with pytest.raises(ValueError, match="at most 4"):
        RequestBatcher(recording_run(calls), max_batch=4, timeout_s=0).submit("s", {"x": np.zeros(5)})


def test_an_error_reaches_only_the_request_that_caused_it():
    calls, gate = [], threading.Event()
    batcher = RequestBatcher(recording_run(calls, gate), max_batch=64, timeout_s=0.0)
    blocker = batcher.submit("s", {"x": np.array([0])})
    while not calls:
        threading.Event().wait(0.01)
    good, bad, other = (batcher.submit("s", {"x": np.array(x)}) for x in ([1, 2], [-1], [3]))
    gate.set()
    assert blocker.result(timeout=30)["y"].tolist() == [1]
    assert good.result(timeout=30)["y"].tolist() == [11, 21] and other.result(timeout=30)["y"].tolist() == [31]
    with pytest.raises(ValueError, match="negative"):
        bad.result(timeout=30)
    batcher.close()
    assert calls == [1, 4, 2, 1, 1]  # the merged call failed, then each request alone


@pytest.mark.slow
def test_concurrent_requests_to_the_server_get_the_answers_of_single_requests(tiny_model_dir, tmp_path):
    from test_client import export_tiny, serve_in_thread

    base = export_tiny(tiny_model_dir, tmp_path / "saved_model")
    words = "the phone is great but a really awful book was happy and broken okay".split()
    rng = np.random.default_rng(0)
    requests = [[" ".join(rng.choice(words, size=n)) for n in rng.integers(1, 20, size=1 + i % 3)] for i in range(16)]

    def predict(url, texts):
        request = urllib.request.Request(f"{url}:predict", data=json.dumps({"instances": texts}).encode())
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())["predictions"]

    with serve_in_thread(base, max_batch=16, batch_timeout_ms=20) as (url, _):
        singles = [predict(url, texts) for texts in requests]
        answers = [None] * len(requests)
        threads = [threading.Thread(target=lambda i=i: answers.__setitem__(i, predict(url, requests[i])))
                   for i in range(len(requests))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    for single, answer in zip(singles, answers):
        assert [p["label"] for p in answer] == [p["label"] for p in single]
        np.testing.assert_allclose([p["probabilities"] for p in answer], [p["probabilities"] for p in single],
                                   atol=1e-5)
