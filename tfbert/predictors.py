"""Every way to predict labels for raw texts, behind one protocol: a save_pretrained folder (Keras), a SavedModel,
a compact TFLite export or a server; and load_predictor, which picks the right one for a path or URL.

Every predictor has ``labels`` and ``predict(texts, text_pairs=None) -> probabilities [n, classes]``, and
``task`` and ``thresholds`` (tfbert.tasks): a multi-label model's probabilities are a sigmoid per label, to be
cut at its thresholds, a regression model's "probabilities" its scores [n, 1].

Example:
    >>> predictor = load_predictor("output/demo_reviews/all-MiniLM-L6-v2/20261123_101500")  # doctest: +SKIP
    >>> predictor.predict(["great value, works perfectly"]).argmax(axis=1)  # doctest: +SKIP
    array([2])
"""

from __future__ import annotations

import functools
import json
import logging
import os
import queue
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional, Protocol, runtime_checkable

import numpy as np

from tfbert import windows
from tfbert.client import RestClient
from tfbert.errors import TfbertError
from tfbert.model_settings import SETTINGS_FILE, ModelSettings
from tfbert.tasks import activate
from tfbert.task_export import outputs_array, served_task

logger = logging.getLogger(__name__)

TFLITE_BATCH_SIZE = 4  # per interpreter; 2 and 4 fastest on 2 cores (AG News: 2: 716, 4: 712, 8: 680 texts/s)


@runtime_checkable
class Predictor(Protocol):
    """What infer.py, the benchmark and the tests call, whatever the model's form.

    Example:
        >>> isinstance(load_predictor("output/.../compact"), Predictor)  # doctest: +SKIP
        True
    """

    labels: list[str]

    def predict(self, texts: list[str], text_pairs: Optional[list[str]] = None) -> np.ndarray:
        """Probabilities [len(texts), len(labels)], float32, in the order of ``texts``."""
        ...


class KerasPredictor:
    """Predictions from a save_pretrained folder (tf_model.h5, config, tokenizer, tfbert.json), or from a Keras 3
    model folder (tfbert.keras_backend.save's files instead of tf_model.h5: see tfbert.export_keras).

    Example:
        >>> KerasPredictor("output/.../model").predict(["great value"])  # doctest: +SKIP
        array([[0.1, 0.9]], dtype=float32)
    """

    def __init__(self, folder: str | Path, batch_size: int = 64):
        from tfbert import modeling
        from tfbert.export_keras import load_model_folder

        folder = Path(folder)
        self.model = load_model_folder(folder)
        settings = ModelSettings.read(folder)
        self.tokenizer = modeling.load_tokenizer(folder, settings.word_tokenizer)
        self.max_length = int(settings.max_length or modeling.model_max_length(folder, self.tokenizer))
        self.truncation = settings.truncation
        self.stride, self.window_pool = windows.stride_of(settings), settings.window_pool
        self.batch_size = batch_size
        self.task, self.thresholds = settings.task, settings.thresholds
        config = self.model.config
        self.labels = [config.id2label[i] for i in range(config.num_labels)]

    def predict(self, texts: list[str], text_pairs: Optional[list[str]] = None) -> np.ndarray:
        import datasets

        from tfbert.data.pipeline import encode_batch
        from tfbert.evaluation import predict_probabilities

        if not texts:
            return np.zeros((0, len(self.labels)), np.float32)
        encoded = encode_batch(self.tokenizer, list(texts), list(text_pairs) if text_pairs else None,
                               self.max_length, self.truncation, count_tokens=False, stride=self.stride)
        return predict_probabilities(self.model, datasets.Dataset.from_dict(encoded), self.tokenizer, self.batch_size,
                                     self.task, self.window_pool)


class SavedModelPredictor:
    """Predictions from an exported SavedModel (a version folder, or a base path: the newest version).

    Calls ``serving_default`` / ``predict_text_pair`` with raw text when the export tokenises in the graph,
    else tokenises with the tokenizer shipped in the export and calls ``predict_ids``.

    Example:
        >>> predictor = SavedModelPredictor("output/.../saved_model")  # doctest: +SKIP
        >>> predictor.predict(["great value"]), predictor.labels  # doctest: +SKIP
        (array([[0.1, 0.9]], dtype=float32), ['neg', 'pos'])
    """

    def __init__(self, path: str | Path, batch_size: int = 64):
        import tensorflow as tf

        from tfbert import runtime
        from tfbert.export import EXTRA, METADATA
        from tfbert.model_settings import resolve_version

        runtime.load_text_ops()  # the tokenizer ops the graph uses
        self.path = resolve_version(path)
        self.batch_size = batch_size
        extra = self.path / EXTRA
        # The settings and what the export adds to them (signatures, tokenisation, weights, ...).
        metadata = extra / METADATA
        self.metadata = json.loads(metadata.read_text(encoding="utf-8")) if metadata.is_file() else {}
        self.settings = ModelSettings.from_json(self.metadata)
        self.loaded = tf.saved_model.load(str(self.path))
        self.labels = list(self.settings.labels)
        self.task, self.thresholds = self.settings.task, self.settings.thresholds
        self.tokenizer = None
        if "serving_default" not in self.loaded.signatures or not self.metadata.get("in_graph_tokenization", True):
            if not (extra / "tokenizer").is_dir():
                raise TfbertError(f"--model {self.path}: the export has no text signature and no tokenizer in "
                                  f"{EXTRA}/tokenizer; re-export it with tfbert")
            from tfbert.tokenizers import load_tokenizer

            self.tokenizer = load_tokenizer(str(extra / "tokenizer"))  # its saved config keeps the word splitter

    def _call(self, batch: list[str], pairs: Optional[list[str]]) -> np.ndarray:
        import tensorflow as tf

        if self.tokenizer is None:
            if pairs is not None:
                if "predict_text_pair" not in self.loaded.signatures:
                    raise TfbertError(f"--text_pair: the SavedModel {self.path} has no predict_text_pair signature "
                                      "(its model was trained on single texts); leave the pairs out")
                out = self.loaded.signatures["predict_text_pair"](text=tf.constant(batch), text_pair=tf.constant(pairs))
            else:
                out = self.loaded.signatures["serving_default"](text=tf.constant(batch))
        else:
            from tfbert.data.pipeline import encode_batch

            stride = windows.stride_of(self.settings)
            encoded = encode_batch(self.tokenizer, batch, pairs, self.settings.max_length, self.settings.truncation,
                                   count_tokens=False, stride=stride)
            if stride is not None:  # every window, and which text each is of: the export pools them
                encoded, document = windows.window_rows(encoded)
            padded = self.tokenizer.pad({k: encoded[k] for k in ("input_ids", "attention_mask", "token_type_ids")
                                         if k in encoded}, return_tensors="np")
            feeds = {k: tf.constant(padded[k], tf.int64) for k in padded}
            feeds.setdefault("token_type_ids", tf.zeros_like(feeds["input_ids"]))
            if stride is not None:
                out = self.loaded.signatures["predict_windows"](**feeds, window_document=tf.constant(document, tf.int64))
            else:
                out = self.loaded.signatures["predict_ids"](**feeds)
        return outputs_array(self.task, out)

    @functools.cached_property
    def _length_tokenizer(self):
        """The shipped tokenizer when it is a fast one (cheap to run over every text), else None."""
        from tfbert.export import EXTRA
        from tfbert.tokenizers import load_tokenizer

        if self.tokenizer is None and not (self.path / EXTRA / "tokenizer").is_dir():
            return None
        tokenizer = self.tokenizer or load_tokenizer(str(self.path / EXTRA / "tokenizer"))
        return tokenizer if tokenizer.is_fast else None

    def _lengths(self, texts: list[str], pairs: Optional[list[str]]) -> list[int]:
        """Tokens per example from the shipped tokenizer when it is a fast one, else characters.

        Counting tokens costs ~1 % of predicting; on AG News batches of 32 sorted by characters were
        padded to 69 tokens on average, sorted by tokens to 54 (the texts have 53).
        """
        if self._length_tokenizer is not None:
            ids = self._length_tokenizer(texts, pairs, add_special_tokens=False, return_attention_mask=False,
                                         return_token_type_ids=False, verbose=False)["input_ids"]
            return [len(row) for row in ids]
        return [len(text) + (len(pairs[i]) if pairs is not None else 0) for i, text in enumerate(texts)]

    def predict(self, texts: list[str], text_pairs: Optional[list[str]] = None,
                sort_by_length: bool = True) -> np.ndarray:
        """Probabilities [len(texts), len(labels)] (float32), in batches of ``batch_size``.

        With ``sort_by_length``, texts are batched in order of length so that each batch carries
        little padding; the result is in the input's order either way.
        """
        if text_pairs is not None and len(text_pairs) != len(texts):
            raise TfbertError(f"text_pairs: {len(text_pairs)} pairs for {len(texts)} texts; give one per text")
        texts = list(texts)
        pairs = list(text_pairs) if text_pairs is not None else None
        # One batch holds the texts in any order: measuring them would be wasted.
        sort = sort_by_length and len(texts) > self.batch_size
        order = np.argsort(self._lengths(texts, pairs), kind="stable") if sort else np.arange(len(texts))
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            batch = order[start:start + self.batch_size]
            batch_pairs = [pairs[i] for i in batch] if pairs is not None else None
            chunks.append(self._call([texts[i] for i in batch], batch_pairs))
        if not chunks:
            return np.zeros((0, len(self.labels)), np.float32)
        probabilities = np.empty((len(texts), chunks[0].shape[1]), np.float32)
        probabilities[order] = np.concatenate(chunks)
        return probabilities


class TFLitePredictor:
    """Predictions from a compact export folder (``compact/`` of a run), in length-sorted batches.

    The batches run on ``interpreters`` LiteRT interpreters at once (default: one per CPU core), each
    with ``os.cpu_count() // interpreters`` threads: small int8 models keep one core busier alone than
    two cores splitting every operation. Measured on 2 cores (AG News, MiniLM, texts tokenised in
    advance): 680 texts/s with one 2-thread interpreter at its best batch size (8), 790 with two 1-thread
    interpreters at batch 4. A lone text then runs on one core.

    Example:
        >>> TFLitePredictor("output/.../compact").predict(["great value"])  # doctest: +SKIP
        array([[0.1, 0.9]], dtype=float32)
    """

    def __init__(self, folder: str | Path, batch_size: int = TFLITE_BATCH_SIZE, interpreters: Optional[int] = None,
                 use_light_tokenizer: bool = True):
        from ai_edge_litert.interpreter import Interpreter

        from tfbert import runtime
        from tfbert.export_tflite import MODEL_FILE, TOKENIZER_DIR
        from tfbert.light_tokenizer import load_light_tokenizer

        folder = Path(folder)
        if not (folder / MODEL_FILE).is_file() or not (folder / SETTINGS_FILE).is_file():
            raise TfbertError(f"--model {folder}: not a compact export (needs {MODEL_FILE} and {SETTINGS_FILE})")
        self.path = folder
        self.settings = ModelSettings.read(folder)
        self.labels = list(self.settings.labels)
        self.task, self.thresholds = self.settings.task, self.settings.thresholds
        self.stride, self.window_pool = windows.stride_of(self.settings), self.settings.window_pool
        self.batch_size = batch_size
        # transformers takes seconds to import: the tokenizers library alone runs the tokenizer where its ids
        # are the same (tfbert.light_tokenizer), else the full tokenizer is loaded.
        self.light_tokenizer, why = load_light_tokenizer(folder / TOKENIZER_DIR, self.settings.max_length,
                                                         self.settings.truncation, self.settings.word_tokenizer,
                                                         self.stride) \
            if use_light_tokenizer else (None, "use_light_tokenizer=False")
        self.tokenizer = None
        if self.light_tokenizer is None:
            from tfbert.modeling import load_tokenizer

            logger.info("compact export: tokenising with transformers, not the tokenizers library alone: %s", why)
            self.tokenizer = load_tokenizer(folder / TOKENIZER_DIR, self.settings.word_tokenizer)
        cores = os.cpu_count() or 1
        self.interpreters = max(1, min(interpreters or cores, cores))
        self._free_runners = queue.SimpleQueue()  # an interpreter runs one batch at a time
        for _ in range(self.interpreters):
            interpreter = Interpreter(model_path=str(folder / MODEL_FILE), num_threads=cores // self.interpreters)
            with runtime.startup_noise_held_back():  # "Created TensorFlow Lite XNNPACK delegate for CPU."
                interpreter.allocate_tensors()
            self._free_runners.put(interpreter.get_signature_runner())
        self._pool = ThreadPoolExecutor(self.interpreters, thread_name_prefix="tflite")

    def predict(self, texts: list[str], text_pairs: Optional[list[str]] = None) -> np.ndarray:
        """The task's outputs [len(texts), outputs] (float32): probabilities, or scores."""
        if text_pairs is not None and len(text_pairs) != len(texts):
            raise TfbertError(f"text_pairs: {len(text_pairs)} pairs for {len(texts)} texts; give one per text")
        pairs = list(text_pairs) if text_pairs is not None else None
        if self.light_tokenizer is not None:
            encoded = self.light_tokenizer.encode(list(texts), pairs)
        else:
            from tfbert.data.pipeline import encode_batch

            encoded = encode_batch(self.tokenizer, list(texts), pairs, self.settings.max_length,
                                   self.settings.truncation, count_tokens=False, stride=self.stride)
        return self.predict_encoded(encoded)

    def predict_encoded(self, encoded) -> np.ndarray:
        """The task's outputs for tokenised texts (encode_batch's dict or a tokenised datasets split), one row per
        text: a windowed split's pooled from its windows' logits, as the SavedModel pools them."""
        if windows.is_windowed(encoded):
            rows, document = windows.window_rows(encoded)
            logits = self.logits(rows["input_ids"], rows.get("token_type_ids"))
            return windows.pooled_outputs(self.task, logits, document, len(encoded[windows.WINDOW_COLUMN]),
                                          self.window_pool)
        token_types = encoded["token_type_ids"] if "token_type_ids" in windows.column_names(encoded) else None
        return self.predict_ids(encoded["input_ids"], token_types)

    def predict_ids(self, input_ids: list[list[int]], token_type_ids: Optional[list[list[int]]] = None) -> np.ndarray:
        """The task's outputs for tokenised examples, one row per example."""
        return activate(self.task, self.logits(input_ids, token_type_ids))

    def logits(self, input_ids: list[list[int]], token_type_ids: Optional[list[list[int]]] = None) -> np.ndarray:
        """Logits [n, outputs] (float32) of tokenised examples; batches hold examples of similar length (little
        padding)."""
        if not len(input_ids):
            return np.zeros((0, len(self.labels)), np.float32)
        order = np.argsort([len(ids) for ids in input_ids], kind="stable")
        batches = [order[start:start + self.batch_size] for start in range(0, len(order), self.batch_size)]
        feeds = [self._padded(rows, input_ids, token_type_ids) for rows in batches]
        results = list(self._pool.map(self._run, feeds)) if len(feeds) > 1 else [self._run(f) for f in feeds]
        logits = np.zeros((len(input_ids), results[0].shape[1]), np.float32)
        for rows, batch_logits in zip(batches, results):
            logits[rows] = batch_logits
        return logits

    def _padded(self, rows: np.ndarray, input_ids: list[list[int]], token_type_ids: Optional[list[list[int]]]) -> dict:
        features = {"input_ids": [input_ids[i] for i in rows]}
        if self.settings.uses_token_type_ids:
            features["token_type_ids"] = ([token_type_ids[i] for i in rows] if token_type_ids is not None
                                          else [[0] * len(input_ids[i]) for i in rows])
        if self.light_tokenizer is not None:
            return self.light_tokenizer.pad(features["input_ids"], features.get("token_type_ids"))
        return {key: value.astype(np.int32) for key, value in
                self.tokenizer.pad(features, return_attention_mask=True, return_tensors="np").items()}

    def _run(self, feeds: dict) -> np.ndarray:
        runner = self._free_runners.get()
        try:
            return runner(**feeds)["logits"]
        finally:
            self._free_runners.put(runner)


class ServerPredictor:
    """Sends texts to a TF Serving-compatible ``<url>:predict`` in batches; ``labels`` come from the answers'
    label_names.

    Example:
        >>> predictor = ServerPredictor("http://127.0.0.1:8501/v1/models/tfbert")  # doctest: +SKIP
        >>> predictor.predict(["great value"]), predictor.labels  # doctest: +SKIP
    """

    def __init__(self, url: str, batch_size: int = 64, timeout: float = 60.0):
        self.client = RestClient(url, timeout)
        self.url = self.client.url
        self.batch_size, self.timeout = batch_size, timeout
        self.labels: list[str] = []
        self.task, self.thresholds = "single_label", None  # read off the answers

    def predict(self, texts: list[str], text_pairs: Optional[list[str]] = None) -> np.ndarray:
        if text_pairs:
            instances = [{"text": t, "text_pair": p} for t, p in zip(texts, text_pairs)]
            answers = self.client.predict_batches(instances, self.batch_size, signature_name="predict_text_pair")
        else:
            answers = self.client.predict_batches(list(texts), self.batch_size)
        chunks = []
        for predictions in answers:
            if isinstance(predictions, list) and predictions and isinstance(predictions[0], (int, float)):
                predictions = [{"score": value} for value in predictions]  # TF Serving's rows of a one-output model
            if not isinstance(predictions, list) or not predictions or not {"probabilities", "score"} & set(
                    predictions[0]):
                raise TfbertError(f"--server {self.url}: the answer has no probabilities; is it a tfbert export?")
            self.task = served_task(predictions[0])
            self.labels = predictions[0].get("label_names") or (["score"] if self.task == "regression" else self.labels)
            self.thresholds = predictions[0].get("thresholds", self.thresholds)
            chunks.append(np.asarray([p.get("probabilities", [p.get("score")]) for p in predictions], np.float32))
        return np.concatenate(chunks) if chunks else np.zeros((0, len(self.labels)), np.float32)


def _is_saved_model(path: Path) -> bool:
    return (path / "saved_model.pb").is_file() or any(
        child.is_dir() and child.name.isdigit() and (child / "saved_model.pb").is_file() for child in path.iterdir()
    )


def load_predictor(model: Optional[str] = None, output_dir: str = "output", server: Optional[str] = None) -> Predictor:
    """The predictor for ``--model`` (run folder, model folder, SavedModel or compact export), ``--server`` URL,
    or the newest run.

    Example:
        >>> load_predictor("output/demo_reviews/all-MiniLM-L6-v2/20261123_101500/saved_model")  # doctest: +SKIP
        <tfbert.predictors.SavedModelPredictor object at ...>
    """
    if server:
        return ServerPredictor(server)
    from tfbert.runs import newest_run

    path = Path(model) if model else newest_run(output_dir)
    if not path.exists():
        raise TfbertError(f"--model {path}: no such folder; give a run folder, a model folder, a SavedModel "
                          "or a compact/ folder")
    if not path.is_dir():
        raise TfbertError(f"--model {path}: is a file; give a run folder, a model folder, a SavedModel "
                          "or a compact/ folder")
    from tfbert.export_tflite import MODEL_FILE

    if (path / MODEL_FILE).is_file():  # a compact export
        return TFLitePredictor(path)
    if (path / "model" / "config.json").is_file():  # a run folder
        return KerasPredictor(path / "model")
    if (path / "config.json").is_file():
        return KerasPredictor(path)
    if _is_saved_model(path):
        return SavedModelPredictor(path)
    raise TfbertError(
        f"--model {path}: not a model (no config.json, model/ or saved_model.pb inside); "
        "give a run folder, its model/ folder, a SavedModel folder or a compact/ folder"
    )
