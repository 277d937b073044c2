"""The compact export for CPU serving: TFLite with dynamic-range int8 weights (its predictor: tfbert.predictors).

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
    >>> folder = export_tflite(model, tokenizer, ModelSettings(labels=["neg", "pos"], max_length=128),
    ...                        "output/run/compact")  # doctest: +SKIP
    >>> tfbert.predictors.TFLitePredictor(folder).predict(["great value"])  # doctest: +SKIP
    array([[0.1, 0.9]], dtype=float32)
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from tfbert.errors import TfbertError
from tfbert.model_settings import ModelSettings

MODEL_FILE = "model_int8.tflite"
TOKENIZER_DIR = "tokenizer"
FORMAT = "tflite, dynamic-range int8 weights, float32 activations, builtin ops only"


def export_tflite(model, tokenizer, settings: ModelSettings, folder: str | Path, *,
                  left_out_layers: Sequence[int] = (), logits: Optional[Callable] = None,
                  variables: Optional[Sequence[Any]] = None) -> Path:
    """Convert a float32 classifier to ``folder/model_int8.tflite`` (its logits) with its tokenizer and
    ``settings``, the model's own (model/tfbert.json: labels, inputs, task, thresholds, windows), which the
    predictor applies to the logits as every other export does; ``left_out_layers``: encoder layers of the
    trained model that ``model`` leaves out, recorded there too.

    ``logits(inputs)`` gives float32 logits for a dict of int32 input tensors; by default transformers' model
    call (tfbert.export_keras.export_tflite_keras passes the Keras 3 model's); ``variables``: the tf.Variables it
    reads, which the converter freezes into the file (by default ``model.variables``).
    The folder is written under a temporary name and renamed into place, so it is whole or absent.
    """
    import tensorflow as tf

    folder = Path(folder)
    if folder.exists():
        raise TfbertError(f"{folder}: already exists; a compact export is never overwritten")
    uses_token_types = "token_type_ids" in tokenizer.model_input_names
    spec = tf.TensorSpec([None, None], tf.int32)

    def transformers_logits(inputs):
        return tf.cast(model(inputs, training=False).logits, tf.float32)

    logits = logits or transformers_logits

    if uses_token_types:
        @tf.function(input_signature=[spec, spec, spec])
        def classify(input_ids, attention_mask, token_type_ids):
            return {"logits": logits({"input_ids": input_ids, "attention_mask": attention_mask,
                                      "token_type_ids": token_type_ids})}
    else:
        @tf.function(input_signature=[spec, spec])
        def classify(input_ids, attention_mask):
            return {"logits": logits({"input_ids": input_ids, "attention_mask": attention_mask})}

    # The converter saves the object it is handed as a SavedModel before converting: handed the Keras model, it
    # traced every layer for that (5.7 of 10.3 s for a 2-layer BERT); a module holding only the variables gives the
    # same file.
    holder = tf.Module()
    holder.tf_variables = list(model.variables if variables is None else variables)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([classify.get_concrete_function()], holder)
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
        dataclasses.replace(settings, uses_token_type_ids=uses_token_types,
                            left_out_layers=list(left_out_layers)).write(staging, format=FORMAT)
        os.rename(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder
