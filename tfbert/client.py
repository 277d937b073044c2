"""A client for TF Serving's REST predict API (or our own server, tfbert.serving): instances in, predictions out.

It knows the protocol only (URLs, batches of instances, errors); tfbert.predictors.ServerPredictor turns texts
into instances and predictions into probabilities.

Example:
    >>> client = RestClient("http://127.0.0.1:8501/v1/models/tfbert")  # doctest: +SKIP
    >>> next(client.predict_batches(["great value"], batch_size=64))[0]["label"]  # doctest: +SKIP
    'pos'
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, Iterator, Optional

from tfbert.errors import TfbertError


class RestClient:
    """POSTs to ``<url>:predict`` and maps HTTP and connection failures to one-line TfbertErrors."""

    def __init__(self, url: str, timeout: float = 60.0):
        self.url = url.rstrip("/")
        if "/v1/models/" not in self.url:
            raise TfbertError(f"--server {url}: expected a URL like http://HOST:8501/v1/models/NAME")
        self.timeout = timeout

    def post(self, payload: dict) -> dict:
        """The JSON answer to one predict request.

        Example:
            >>> RestClient(url).post({"instances": ["great value"]})["predictions"]  # doctest: +SKIP
        """
        request = urllib.request.Request(f"{self.url}:predict", data=json.dumps(payload).encode("utf-8"),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", "replace")[:300]
            raise TfbertError(f"--server {self.url}: HTTP {error.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as error:
            raise TfbertError(f"--server {self.url}: cannot connect ({getattr(error, 'reason', error)}); "
                              "is the server running?") from None

    def predict_batches(self, instances: list, batch_size: int,
                        signature_name: Optional[str] = None) -> Iterator[Any]:
        """The ``predictions`` of each request of at most ``batch_size`` instances, in order (row format).

        Example:
            >>> [len(p) for p in RestClient(url).predict_batches(["a", "b", "c"], batch_size=2)]  # doctest: +SKIP
            [2, 1]
        """
        for start in range(0, len(instances), batch_size):
            payload = {"instances": list(instances[start:start + batch_size])}
            if signature_name:
                payload = {"signature_name": signature_name, **payload}
            yield self.post(payload).get("predictions")
