"""An HTTP server that speaks TF Serving's REST API for one exported model, so one client fits both.

    POST /v1/models/<name>[/versions/<v>]:predict   {"instances": [...]} or {"inputs": ...}
    GET  /v1/models/<name>[/versions/<v>]           version status
    GET  /v1/models/<name>[/versions/<v>]/metadata  signature definitions
    GET  /healthz, /readyz                          liveness and readiness for containers

Errors answer like TF Serving: HTTP 400/404/413 with ``{"error": "..."}``; the process stays up.

Example:
    >>> app = create_app("output/.../saved_model", model_name="tfbert")  # doctest: +SKIP
    >>> import uvicorn; uvicorn.run(app, host="127.0.0.1", port=8501)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from fastapi import FastAPI, Request  # module level: FastAPI resolves the handlers' annotations here
from fastapi.responses import JSONResponse

from tfbert.batching import RequestBatcher

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerLimits:
    """Bounds on what one request may ask for."""

    max_body_bytes: int = 4 * 1024 * 1024
    max_batch: int = 256


class RequestError(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _tensor_info(spec) -> dict:
    shape = [{"size": str(-1 if d is None else d), "name": ""} for d in spec.shape]
    return {"dtype": f"DT_{spec.dtype.name.upper()}", "tensor_shape": {"dim": shape, "unknown_rank": False},
            "name": spec.name or ""}


class LoadedModel:
    """A SavedModel version and its signatures, called with Python lists."""

    def __init__(self, path: Path):
        import tensorflow as tf

        from tfbert import runtime
        from tfbert.model_settings import resolve_version

        runtime.load_text_ops()  # the tokenizer ops the graph uses
        self.path = resolve_version(path)
        self.version = self.path.name if self.path.name.isdigit() else "1"
        self.loaded = tf.saved_model.load(str(self.path))
        self.signatures = dict(self.loaded.signatures)
        self.warmed_up = self._warm_up()

    def _warm_up(self) -> list[str]:
        """Call every signature once on a one-row input, before the server answers.

        TensorFlow optimises a function's graph on its first call; with the weights as graph constants
        that took ~6 s for MiniLM, which would otherwise land on the first request (TF Serving does the
        same with the warm-up requests of an export, made from the same inputs).
        """
        import tensorflow as tf

        from tfbert.export import warmup_inputs

        done = []
        for name in self.signatures:
            feeds = {key: tf.constant(value) for key, value in warmup_inputs(self.inputs(name)).items()}
            try:
                self.signatures[name](**feeds)
            except tf.errors.OpError as error:  # the first real request will report what is wrong
                logger.warning("warm-up of signature %s failed: %s", name, _tf_error_line(str(error.message)))
                continue
            done.append(name)
        return done

    def inputs(self, name: str) -> dict:
        return self.signatures[name].structured_input_signature[1]

    def metadata(self) -> dict:
        defs = {}
        for name, function in self.signatures.items():
            defs[name] = {
                "inputs": {key: _tensor_info(spec) for key, spec in self.inputs(name).items()},
                "outputs": {key: _tensor_info(spec) for key, spec in function.structured_outputs.items()},
                "method_name": "tensorflow/serving/predict",
            }
        return {"signature_def": {"signature_def": defs}}

    def feeds(self, signature: str, columns: dict[str, list]) -> dict:
        """A request's input columns checked against the signature, as arrays (RequestError if they do not fit)."""
        import tensorflow as tf

        specs = self.inputs(signature)
        feeds = {}
        for key, spec in specs.items():
            if key not in columns:
                raise RequestError(f"missing input '{key}' for signature '{signature}'")
            values = decode_b64(columns[key]) if spec.dtype == tf.string else columns[key]
            try:
                feeds[key] = tf.constant(values, dtype=spec.dtype)
            except (ValueError, TypeError, UnicodeError, tf.errors.InvalidArgumentError) as error:
                raise RequestError(f"input '{key}' must be {spec.dtype.name} with shape {spec.shape}: "
                                   f"{str(error).splitlines()[0][:200]}") from None
            if feeds[key].shape.rank != spec.shape.rank:
                raise RequestError(f"input '{key}' must have rank {spec.shape.rank}, got {feeds[key].shape.rank}")
        unknown = set(columns) - set(specs)
        if unknown:
            raise RequestError(f"unknown input(s) {sorted(unknown)} for signature '{signature}'")
        return {key: value.numpy() for key, value in feeds.items()}

    def batchable(self, signature: str) -> bool:
        """Whether requests to ``signature`` can share a call: rows of text (token ids differ in length)."""
        return all(spec.shape.rank == 1 for spec in self.inputs(signature).values())

    def call(self, signature: str, feeds: dict) -> dict:
        """The signature's outputs as arrays, for checked ``feeds``."""
        import tensorflow as tf

        try:
            outputs = self.signatures[signature](**{key: tf.constant(value) for key, value in feeds.items()})
        except tf.errors.InvalidArgumentError as error:
            raise RequestError(_tf_error_line(str(error.message))) from None
        return {key: value.numpy() for key, value in outputs.items()}

    def run(self, signature: str, columns: dict[str, list]) -> dict[str, list]:
        """One request's columns in, its JSON-ready outputs back."""
        return {key: _to_json(value) for key, value in self.call(signature, self.feeds(signature, columns)).items()}


def _tf_error_line(message: str) -> str:
    """The informative line of a TensorFlow error (not "Graph execution error:" or a node trace)."""
    boilerplate = ("Graph execution error", "Detected at node", "File ", "[[", "Stack trace", "Traceback")
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(boilerplate)]
    return (useful or lines or ["the model could not run on this input"])[0][:300]


def _to_json(array) -> Any:
    if array.dtype.kind in ("S", "O"):
        return _decode(array.tolist())
    return array.tolist()


def _decode(value):
    if isinstance(value, list):
        return [_decode(item) for item in value]
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def decode_b64(value):
    """TF Serving's binary strings: {"b64": "..."} anywhere a string goes."""
    if isinstance(value, list):
        return [decode_b64(item) for item in value]
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (ValueError, binascii.Error):
            raise RequestError("a {\"b64\": ...} value is not valid base64") from None
    return value


def _is_named(item) -> bool:
    return isinstance(item, dict) and set(item) != {"b64"}


def _columns_from_instances(instances: list, input_names: list[str]) -> dict[str, list]:
    """Row format to columns: instances are all named objects (one key per input) or all plain values."""
    if all(_is_named(item) for item in instances):
        keys = set(instances[0])
        if any(set(item) != keys for item in instances):
            raise RequestError(f"every instance must have the same keys; this signature takes {input_names}")
        return {key: [item[key] for item in instances] for key in keys}
    if any(_is_named(item) for item in instances):
        raise RequestError("instances must be all objects or all values")
    if len(input_names) != 1:
        raise RequestError(f"instances must be objects with keys {input_names}")
    return {input_names[0]: instances}


def _default_signature(request: dict, loaded: LoadedModel) -> str:
    """serving_default, or predict_text_pair when the instances/inputs carry a text_pair (an extension of
    TF Serving, which needs "signature_name": "predict_text_pair" for that)."""
    instances, inputs = request.get("instances"), request.get("inputs")
    carries_pairs = (isinstance(instances, list) and instances and isinstance(instances[0], dict)
                     and "text_pair" in instances[0]) or (isinstance(inputs, dict) and "text_pair" in inputs)
    if not carries_pairs or "serving_default" not in loaded.signatures:  # no text signatures: predict_ids only
        return "serving_default"
    if "predict_text_pair" not in loaded.signatures:
        raise RequestError("text_pair: this model was trained on single texts (its export has no "
                           "predict_text_pair signature); send text alone")
    return "predict_text_pair"


def parse_predict(body: bytes, loaded: LoadedModel, limits: ServerLimits) -> tuple[str, dict[str, list], str]:
    """(signature, input columns, 'row'|'columnar') from a TF Serving predict body, or a RequestError."""
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise RequestError(f"malformed JSON body: {error}") from None
    if not isinstance(request, dict):
        raise RequestError('the body must be a JSON object with "instances" or "inputs"')
    signature = request.get("signature_name")
    if signature is None:
        signature = _default_signature(request, loaded)
    if not isinstance(signature, str) or signature not in loaded.signatures:
        hint = " (it tokenises on the client: send input_ids, attention_mask, token_type_ids)" \
            if "predict_ids" in loaded.signatures and "serving_default" not in loaded.signatures else ""
        raise RequestError(f"unknown signature_name {signature!r}; this model has {sorted(loaded.signatures)}{hint}")
    input_names = sorted(loaded.inputs(signature))
    if ("instances" in request) == ("inputs" in request):
        raise RequestError('give exactly one of "instances" (row format) or "inputs" (columnar format)')
    if "instances" in request:
        instances = request["instances"]
        if not isinstance(instances, list) or not instances:
            raise RequestError('"instances" must be a non-empty list')
        columns, layout = _columns_from_instances(instances, input_names), "row"
    else:
        inputs = request["inputs"]
        columns = inputs if isinstance(inputs, dict) else {input_names[0]: inputs} if len(input_names) == 1 else None
        if columns is None:
            raise RequestError(f'"inputs" must be an object with keys {input_names}')
        layout = "columnar"
    sizes = {len(value) if isinstance(value, list) else -1 for value in columns.values()}
    if -1 in sizes or len(sizes) != 1:
        raise RequestError("every input must be a list, all of the same length (the batch)")
    size = sizes.pop()
    if size == 0:
        raise RequestError("empty batch: send at least one instance")
    if size > limits.max_batch:
        raise RequestError(f"batch of {size} is over this server's limit of {limits.max_batch}; split it")
    return signature, columns, layout


def create_app(model, model_name: str = "tfbert", limits: ServerLimits = ServerLimits(),
               batch_timeout_ms: Optional[float] = None):
    """A FastAPI app serving ``model`` as ``model_name``: a SavedModel's version folder or base path, or a
    model already loaded (LoadedModel, or tfbert.compact_serving.CompactModel: the same signatures without
    TensorFlow).

    With ``batch_timeout_ms`` (server-side batching), text requests arriving within that many milliseconds of
    each other share one model call of at most ``limits.max_batch`` texts (see tfbert.batching); None: each
    request is its own call.
    """
    loaded = LoadedModel(Path(model)) if isinstance(model, (str, Path)) else model
    batcher = None if batch_timeout_ms is None else \
        RequestBatcher(loaded.call, limits.max_batch, batch_timeout_ms / 1000)
    app = FastAPI(title="tfbert", docs_url=None, redoc_url=None)

    def error(message: str, status: int = 400) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    def check_model(name: str, version: str | None) -> JSONResponse | None:
        if name != model_name:
            return error(f"Servable not found for request: Latest({name})", 404)
        if version is not None and version != loaded.version:
            return error(f"Servable not found for request: Specific({name}, {version})", 404)
        return None

    def status(name: str, version: str | None = None):
        problem = check_model(name, version)
        return problem or {"model_version_status": [
            {"version": loaded.version, "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}

    def metadata(name: str, version: str | None = None):
        problem = check_model(name, version)
        return problem or {"model_spec": {"name": model_name, "signature_name": "", "version": loaded.version},
                           "metadata": loaded.metadata()}

    async def predict(request: Request, name: str, version: str | None = None):
        problem = check_model(name, version)
        if problem:
            return problem
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limits.max_body_bytes:
            return error(f"request body over {limits.max_body_bytes} bytes", 413)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limits.max_body_bytes:
                return error(f"request body over {limits.max_body_bytes} bytes", 413)
        try:
            signature, columns, layout = parse_predict(bytes(body), loaded, limits)
            from starlette.concurrency import run_in_threadpool

            feeds = await run_in_threadpool(loaded.feeds, signature, columns)
            if batcher is not None and loaded.batchable(signature):
                outputs = await asyncio.wrap_future(batcher.submit(signature, feeds))
            else:
                outputs = await run_in_threadpool(loaded.call, signature, feeds)
        except RequestError as problem:
            return error(str(problem), problem.status)
        outputs = {key: _to_json(value) for key, value in outputs.items()}
        if layout == "columnar":
            return {"outputs": outputs}
        size = len(next(iter(outputs.values())))
        return {"predictions": [{key: value[i] for key, value in outputs.items()} for i in range(size)]}

    app.get("/v1/models/{name}")(status)
    app.get("/v1/models/{name}/versions/{version}")(status)
    app.get("/v1/models/{name}/metadata")(metadata)
    app.get("/v1/models/{name}/versions/{version}/metadata")(metadata)

    @app.post("/v1/models/{target:path}")
    async def predict_route(request: Request, target: str):
        path, _, verb = target.rpartition(":")
        if verb != "predict":
            return error(f"unsupported verb {verb!r}; this server answers :predict", 404)
        parts = path.split("/")
        if len(parts) == 1:
            return await predict(request, parts[0])
        if len(parts) == 3 and parts[1] == "versions":
            return await predict(request, parts[0], parts[2])
        return error(f"malformed path /v1/models/{target}", 404)

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz():
        return {"status": "ready", "model": model_name, "version": loaded.version}

    @app.exception_handler(Exception)
    async def unexpected(_request, exc):  # never let one request take the process down
        logger.exception("unexpected error")
        return error(f"internal error: {type(exc).__name__}", 500)

    return app
