"""serve.py's model when it serves a compact export (compact/, TFLite): TF Serving's REST signatures without
TensorFlow.

The signatures and outputs are the SavedModel's (tfbert.export, tfbert.task_export): ``serving_default`` (text),
``predict_text_pair`` (text, text_pair) and, for models that do not read texts in windows, ``predict_ids``
(input_ids, attention_mask, token_type_ids). The answers come from :class:`tfbert.predictors.TFLitePredictor`,
so they are infer.py's for the same export. The process never imports TensorFlow: it holds LiteRT, the
tokenizers library and the int8 model.

Example:
    >>> model = CompactModel(Path("output/run/compact"))  # doctest: +SKIP
    >>> model.run("serving_default", {"text": ["great value"]})["label"]  # doctest: +SKIP
    ['pos']
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tfbert.serving import RequestError, decode_b64
from tfbert.task_export import LABEL_JOIN
from tfbert.task_export import OUTPUTS as TASK_OUTPUTS
from tfbert.tasks import decide

ID_COLUMNS = ("input_ids", "attention_mask", "token_type_ids")
# Each output's dtype and whether it has a column per label, as the SavedModel server declares them.
OUTPUT_TYPES = {"probabilities": ("float32", True), "label_id": ("int64", False), "label": ("string", False),
                "label_names": ("string", True), "label_mask": ("bool", True), "thresholds": ("float32", True),
                "score": ("float32", False)}
SINGLE_LABEL_OUTPUTS = ("probabilities", "label_id", "label", "label_names")
WARMUP_COLUMNS = {"text": ["warm up"], "text_pair": ["warm up"], "input_ids": [[0]], "attention_mask": [[1]],
                  "token_type_ids": [[0]]}


@dataclass(frozen=True)
class InputSpec:
    """A signature input: ``string`` or ``int64``, rank 1 (texts) or 2 (token ids)."""

    dtype: str
    rank: int


def _tensor_info(dtype: str, dims: list[int], name: str) -> dict:
    """TF Serving's metadata for one tensor (the SavedModel server's form, see tfbert.serving); -1: any size."""
    return {"dtype": f"DT_{dtype.upper()}", "name": name,
            "tensor_shape": {"dim": [{"size": str(size), "name": ""} for size in dims], "unknown_rank": False}}


def _utf8(value) -> str:
    """A request's string as text: JSON strings as they are, base64 ones decoded as UTF-8."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if not isinstance(value, str):
        raise TypeError(f"{value!r} is not a string")
    value.encode("utf-8")  # a lone surrogate ("\ud800") is no text
    return value


def _column(key: str, spec: InputSpec, values) -> np.ndarray:
    """One input column as an array of the spec's dtype and rank, or a RequestError naming what is wrong."""
    try:
        if spec.dtype == "string":
            array = np.array(decode_b64(values), dtype=object)
            if array.ndim == spec.rank:
                array = np.array([_utf8(value) for value in array.reshape(-1)], dtype=object).reshape(array.shape)
        else:
            array = np.array(values, dtype=np.int64)
    except (ValueError, TypeError, UnicodeError, OverflowError) as error:
        raise RequestError(f"input '{key}' must be {spec.dtype} with rank {spec.rank}: "
                           f"{str(error).splitlines()[0][:200]}") from None
    if array.ndim != spec.rank:
        raise RequestError(f"input '{key}' must have rank {spec.rank}, got {array.ndim}")
    return array


def signature_outputs(task: str, outputs: np.ndarray, labels: list[str], thresholds) -> dict[str, np.ndarray]:
    """The SavedModel signature's outputs for the predictor's array (probabilities, or scores [n, 1]).

    Example:
        >>> signature_outputs("single_label", np.array([[0.2, 0.8]]), ["neg", "pos"], None)["label"].tolist()
        ['pos']
    """
    rows = len(outputs)
    if task == "regression":
        return {"score": outputs[:, 0].astype(np.float32)}
    names = np.array(labels, dtype=object)
    label_names = np.tile(names, (rows, 1))
    probabilities = outputs.astype(np.float32)
    if task == "multi_label":
        thresholds = thresholds or [0.5] * len(labels)  # as the SavedModel's default
        mask = decide(probabilities, thresholds)
        return {"probabilities": probabilities, "label_mask": mask,
                "label": np.array([LABEL_JOIN.join(names[row]) for row in mask], dtype=object),
                "label_names": label_names,
                "thresholds": np.tile(np.asarray(thresholds, np.float32), (rows, 1))}
    label_id = probabilities.argmax(axis=1).astype(np.int64)
    return {"probabilities": probabilities, "label_id": label_id, "label": names[label_id], "label_names": label_names}


class CompactModel:
    """A compact export behind the interface of tfbert.serving.LoadedModel: signatures called with lists."""

    def __init__(self, path: Path):
        from tfbert.inputs import trained_with_pairs
        from tfbert.predictors import TFLitePredictor

        self.path, self.version = Path(path), "1"
        self.predictor = TFLitePredictor(self.path)
        text = InputSpec("string", 1)
        self.signatures = {"serving_default": {"text": text}}
        if trained_with_pairs(self.path) is not False:  # as the SavedModel of a model trained on single texts has none
            self.signatures["predict_text_pair"] = {"text": text, "text_pair": text}
        if self.predictor.stride is None:  # windowed models take whole texts only (the SavedModel's predict_windows
            self.signatures["predict_ids"] = {key: InputSpec("int64", 2) for key in ID_COLUMNS}  # is not here)
        self.warmed_up = self._warm_up()

    def _warm_up(self) -> list[str]:
        """Call every signature once on a one-row input (LiteRT sizes its tensors on the first call)."""
        for name, inputs in self.signatures.items():
            self.run(name, {key: WARMUP_COLUMNS[key] for key in inputs})
        return list(self.signatures)

    def inputs(self, name: str) -> dict[str, InputSpec]:
        return self.signatures[name]

    def output_names(self) -> list[str]:
        task = self.predictor.task
        return list(SINGLE_LABEL_OUTPUTS if task == "single_label" else TASK_OUTPUTS[task])

    def metadata(self) -> dict:
        outputs = {}
        for name in self.output_names():
            dtype, per_label = OUTPUT_TYPES[name]
            outputs[name] = _tensor_info(dtype, [-1, len(self.predictor.labels)] if per_label else [-1], name)
        defs = {name: {"inputs": {key: _tensor_info(spec.dtype, [-1] * spec.rank, key) for key, spec in inputs.items()},
                       "outputs": outputs, "method_name": "tensorflow/serving/predict"}
                for name, inputs in self.signatures.items()}
        return {"signature_def": {"signature_def": defs}}

    def feeds(self, signature: str, columns: dict[str, list]) -> dict[str, np.ndarray]:
        """A request's input columns checked against the signature, as arrays (RequestError if they do not fit)."""
        specs = self.inputs(signature)
        missing = [key for key in specs if key not in columns]
        if missing:
            raise RequestError(f"missing input '{missing[0]}' for signature '{signature}'")
        unknown = set(columns) - set(specs)
        if unknown:
            raise RequestError(f"unknown input(s) {sorted(unknown)} for signature '{signature}'")
        feeds = {key: _column(key, spec, columns[key]) for key, spec in specs.items()}
        if signature == "predict_ids" and len({feeds[key].shape for key in ID_COLUMNS}) != 1:
            raise RequestError("input_ids, attention_mask and token_type_ids must have the same shape")
        return feeds

    def batchable(self, signature: str) -> bool:
        """Whether requests to ``signature`` can share a call: rows of text (token ids differ in length)."""
        return all(spec.rank == 1 for spec in self.inputs(signature).values())

    def call(self, signature: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The signature's outputs as arrays, for checked ``feeds``."""
        predictor = self.predictor
        if signature == "predict_ids":
            kept = feeds["attention_mask"].astype(bool)  # padding, wherever it is, is left out
            ids = [row[keep].tolist() for row, keep in zip(feeds["input_ids"], kept)]
            types = [row[keep].tolist() for row, keep in zip(feeds["token_type_ids"], kept)]
            if any(not row for row in ids):
                raise RequestError("every row of attention_mask needs at least one 1")
            outputs = predictor.predict_ids(ids, types if predictor.settings.uses_token_type_ids else None)
        else:
            pairs = feeds["text_pair"].tolist() if "text_pair" in feeds else None
            outputs = predictor.predict(feeds["text"].tolist(), pairs)
        return signature_outputs(predictor.task, outputs, predictor.labels, predictor.thresholds)

    def run(self, signature: str, columns: dict[str, list]) -> dict[str, list]:
        """One request's columns in, its outputs back as lists."""
        return {key: value.tolist() for key, value in self.call(signature, self.feeds(signature, columns)).items()}
