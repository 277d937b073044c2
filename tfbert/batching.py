"""Server-side batching: requests that arrive together are answered by one model call, as TF Serving's
batching does (``max_batch_size``, ``batch_timeout_micros``).

The first waiting request opens a batch; requests for the same signature join it until it holds
``max_batch`` rows or ``timeout_s`` has passed since that first request arrived; one worker thread runs the
batch and hands each request its own rows back, in order. A request never waits longer than the timeout
plus the calls already queued before it.

Example:
    >>> batcher = RequestBatcher(lambda key, feeds: {"twice": feeds["x"] * 2}, max_batch=64, timeout_s=0.005)
    >>> batcher.submit("sig", {"x": np.array([1, 2])}).result()["twice"].tolist()
    [2, 4]
    >>> batcher.close()
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

Feeds = dict[str, np.ndarray]


@dataclass
class _Request:
    key: str
    feeds: Feeds
    rows: int
    arrived: float
    future: Future = field(default_factory=Future)


class RequestBatcher:
    """Collects concurrent requests into calls of ``run(key, feeds)`` of at most ``max_batch`` rows.

    ``feeds`` are arrays with the rows as their first dimension, concatenated across the requests of one
    key (the signature); ``run`` returns arrays with the rows first too, split back per request. If a merged
    call raises, each of its requests is run alone, so an error reaches only the request that caused it.
    """

    def __init__(self, run: Callable[[str, Feeds], Feeds], max_batch: int, timeout_s: float):
        self.run, self.max_batch, self.timeout_s = run, max_batch, timeout_s
        self._pending: list[_Request] = []
        self._changed = threading.Condition()
        self._closed = False
        self.calls = 0  # model calls made: how many requests shared one shows in tests and logs
        self._worker = threading.Thread(target=self._serve, name="request-batcher", daemon=True)
        self._worker.start()

    def submit(self, key: str, feeds: Feeds) -> Future:
        """Queue one request (at most ``max_batch`` rows); its future holds its own rows of the outputs."""
        rows = len(next(iter(feeds.values())))
        if not 0 < rows <= self.max_batch:
            raise ValueError(f"a request of {rows} rows does not fit batches of at most {self.max_batch}")
        request = _Request(key, feeds, rows, time.monotonic())
        with self._changed:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._pending.append(request)
            self._changed.notify()
        return request.future

    def close(self) -> None:
        """Finish what is queued, then stop the worker."""
        with self._changed:
            self._closed = True
            self._changed.notify()
        self._worker.join()

    def _take(self) -> list[_Request]:
        """Wait for a full batch or the first request's deadline; remove the batch from the queue."""
        with self._changed:
            while not self._pending and not self._closed:
                self._changed.wait()
            if not self._pending:
                return []
            first = self._pending[0]
            deadline = first.arrived + self.timeout_s
            while True:
                batch, rows = [], 0
                for request in self._pending:  # first come first served among the requests that fit
                    if request.key == first.key and rows + request.rows <= self.max_batch:
                        batch.append(request)
                        rows += request.rows
                remaining = deadline - time.monotonic()
                if rows >= self.max_batch or remaining <= 0 or self._closed:
                    break
                self._changed.wait(remaining)
            taken = {id(request) for request in batch}
            self._pending = [request for request in self._pending if id(request) not in taken]
            return batch

    def _serve(self) -> None:
        while True:
            batch = self._take()
            if not batch:
                return
            self._answer(batch)

    def _answer(self, batch: list[_Request]) -> None:
        try:
            feeds = batch[0].feeds if len(batch) == 1 else \
                {key: np.concatenate([request.feeds[key] for request in batch]) for key in batch[0].feeds}
            self.calls += 1
            outputs = self.run(batch[0].key, feeds)
        except Exception as error:  # noqa: BLE001  (handed to the request, which reports it)
            if len(batch) == 1:
                batch[0].future.set_exception(error)
            else:
                for request in batch:  # alone, so that only the request at fault gets the error
                    self._answer([request])
            return
        start = 0
        for request in batch:
            request.future.set_result({key: value[start:start + request.rows] for key, value in outputs.items()})
            start += request.rows
