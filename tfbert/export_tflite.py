"""The compact export for CPU serving: TFLite with dynamic-range int8 weights, and its predictor.

Dynamic-range quantisation stores the weights as int8 (a quarter of float32) and runs the matrix
multiplications on int8 with activations quantised on the fly, so it needs no calibration data.
MiniLM converts with TFLite's builtin ops only; the predictor runs it with LiteRT (ai-edge-litert,
TensorFlow's successor to tf.lite.Interpreter), which can serve the file without TensorFlow.
Measured with all-MiniLM-L6-v2 fine-tuned on AG News, 2 cores: 22 MiB (24 % of the SavedModel), the
SavedModel's macro-F1 within 0.002, 700-730 texts/s (text in, batches of 4 on two interpreters);
920-970 since the last encoder layer computes the first token only (fused_ops), 1,030-1,080 with one of
its six layers left out (train.py's --compact_layers auto, tfbert.layer_drop; test macro-F1 -0.002).
onnxruntime 1.32 with QInt8 weights ran 390-480 texts/s where TFLite ran 590-660 with one interpreter,
even on a fully fused BERT graph; static int8 activations (calibrated) were 5x slower and lost 0.10
macro-F1. The run folder records the F1 on the test split.

Example:
    >>> folder = export_tflite(model, tokenizer, labels=["neg", "pos"], max_length=128,
    ...                        truncation="head", folder="output/run/compact")  # doctest: +SKIP
    >>> TFLitePredictor(folder).predict(["great value"])  # doctest: +SKIP
    array([[0.1, 0.9]], dtype=float32)
"""

from __future__ import annotations

import json
import os
import queue
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from tfbert.errors import TfbertError

MODEL_FILE = "model_int8.tflite"
SETTINGS_FILE = "tfbert.json"
TOKENIZER_DIR = "tokenizer"
DEFAULT_BATCH_SIZE = 4  # per interpreter; 2 and 4 fastest on 2 cores (AG News: 2: 716, 4: 712, 8: 680 texts/s)


def export_tflite(model, tokenizer, *, labels: list[str], max_length: int, truncation: str,
                  folder: str | Path, word_tokenizer: Optional[str] = None,
                  left_out_layers: Sequence[int] = ()) -> Path:
    """Convert a float32 classifier to ``folder/model_int8.tflite`` with its tokenizer and settings
    (``left_out_layers``: encoder layers of the trained model that ``model`` leaves out, recorded there).

    The folder is written under a temporary name and renamed into place, so it is whole or absent.
    """
    import tensorflow as tf

    folder = Path(folder)
    if folder.exists():
        raise TfbertError(f"{folder}: already exists; a compact export is never overwritten")
    uses_token_types = "token_type_ids" in tokenizer.model_input_names
    spec = tf.TensorSpec([None, None], tf.int32)

    def logits(inputs):
        return tf.cast(model(inputs, training=False).logits, tf.float32)

    if uses_token_types:
        @tf.function(input_signature=[spec, spec, spec])
        def classify(input_ids, attention_mask, token_type_ids):
            return {"logits": logits({"input_ids": input_ids, "attention_mask": attention_mask,
                                      "token_type_ids": token_type_ids})}
    else:
        @tf.function(input_signature=[spec, spec])
        def classify(input_ids, attention_mask):
            return {"logits": logits({"input_ids": input_ids, "attention_mask": attention_mask})}

    converter = tf.lite.TFLiteConverter.from_concrete_functions([classify.get_concrete_function()], model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]  # dynamic range: int8 weights, float activations
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        flatbuffer = converter.convert()
    except Exception as error:  # the converter raises its own ConverterError with pages of MLIR
        raise TfbertError(f"TFLite conversion of {type(model).__name__} failed ({str(error).splitlines()[0][:200]}); "
                          "train without --export_tflite") from None
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        (staging / MODEL_FILE).write_bytes(flatbuffer)
        tokenizer.save_pretrained(staging / TOKENIZER_DIR)
        settings = {"labels": list(labels), "max_length": max_length, "truncation": truncation,
                    "uses_token_type_ids": uses_token_types, "word_tokenizer": word_tokenizer,
                    "left_out_layers": list(left_out_layers),
                    "format": "tflite, dynamic-range int8 weights, float32 activations, builtin ops only"}
        (staging / SETTINGS_FILE).write_text(json.dumps(settings, indent=2, ensure_ascii=False), encoding="utf-8")
        os.rename(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


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

    def __init__(self, folder: str | Path, batch_size: int = DEFAULT_BATCH_SIZE, interpreters: Optional[int] = None):
        from ai_edge_litert.interpreter import Interpreter

        from tfbert.modeling import load_tokenizer

        folder = Path(folder)
        if not (folder / MODEL_FILE).is_file() or not (folder / SETTINGS_FILE).is_file():
            raise TfbertError(f"--model {folder}: not a compact export (needs {MODEL_FILE} and {SETTINGS_FILE})")
        self.path = folder
        self.settings = json.loads((folder / SETTINGS_FILE).read_text(encoding="utf-8"))
        self.labels = list(self.settings["labels"])
        self.batch_size = batch_size
        self.tokenizer = load_tokenizer(folder / TOKENIZER_DIR, self.settings.get("word_tokenizer"))
        cores = os.cpu_count() or 1
        self.interpreters = max(1, min(interpreters or cores, cores))
        self._free_runners = queue.SimpleQueue()  # an interpreter runs one batch at a time
        for _ in range(self.interpreters):
            interpreter = Interpreter(model_path=str(folder / MODEL_FILE), num_threads=cores // self.interpreters)
            self._free_runners.put(interpreter.get_signature_runner())
        self._pool = ThreadPoolExecutor(self.interpreters, thread_name_prefix="tflite")

    def predict(self, texts: list[str], text_pairs: Optional[list[str]] = None) -> np.ndarray:
        """Probabilities [len(texts), len(labels)] (float32)."""
        from tfbert.data.pipeline import encode_batch

        if text_pairs is not None and len(text_pairs) != len(texts):
            raise TfbertError(f"text_pairs: {len(text_pairs)} pairs for {len(texts)} texts; give one per text")
        encoded = encode_batch(self.tokenizer, list(texts), list(text_pairs) if text_pairs is not None else None,
                               self.settings["max_length"], self.settings["truncation"], count_tokens=False)
        return self.predict_ids(encoded["input_ids"], encoded.get("token_type_ids"))

    def predict_ids(self, input_ids: list[list[int]], token_type_ids: Optional[list[list[int]]] = None) -> np.ndarray:
        """Probabilities for tokenised examples; batches hold examples of similar length (little padding)."""
        from scipy.special import softmax

        order = np.argsort([len(ids) for ids in input_ids], kind="stable")
        batches = [order[start:start + self.batch_size] for start in range(0, len(order), self.batch_size)]
        feeds = [self._padded(rows, input_ids, token_type_ids) for rows in batches]
        logits = list(self._pool.map(self._run, feeds)) if len(feeds) > 1 else [self._run(f) for f in feeds]
        probabilities = np.zeros((len(input_ids), len(self.labels)), np.float32)
        for rows, batch_logits in zip(batches, logits):
            probabilities[rows] = softmax(batch_logits.astype(np.float64), axis=1)
        return probabilities

    def _padded(self, rows: np.ndarray, input_ids: list[list[int]], token_type_ids: Optional[list[list[int]]]) -> dict:
        features = {"input_ids": [input_ids[i] for i in rows]}
        if self.settings["uses_token_type_ids"]:
            features["token_type_ids"] = ([token_type_ids[i] for i in rows] if token_type_ids is not None
                                          else [[0] * len(input_ids[i]) for i in rows])
        return {key: value.astype(np.int32) for key, value in
                self.tokenizer.pad(features, return_attention_mask=True, return_tensors="np").items()}

    def _run(self, feeds: dict) -> np.ndarray:
        runner = self._free_runners.get()
        try:
            return runner(**feeds)["logits"]
        finally:
            self._free_runners.put(runner)
