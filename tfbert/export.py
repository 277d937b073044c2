"""SavedModel export in TF Serving's layout: raw text in, probabilities and labels out.

    <base>/<version>/saved_model.pb (the graph; the model's weights in it as constants if asked: model_forward),
                     variables/ (the weights otherwise, in the precision the graph computes with: the default,
                     runtime.resolve_export_weights; and for models over 1 GiB),
                     assets/ (vocabulary),
                     assets.extra/tfbert/metadata.json, assets.extra/tfbert/tokenizer/

Signatures (``metadata.json`` lists the ones an export has, with the reason when text ones are missing):
  serving_default    text: string [batch] -> probabilities float32 [batch, classes], label_id int64 [batch],
                     label string [batch], label_names string [batch, classes]. Tokenises in the graph with
                     TF Text ops, exactly as the Hugging Face tokenizer: WordPiece (fast BERT-family tokenizers;
                     RegexSplitWithOffsets, WordpieceTokenizeWithOffsets) or SentencePiece (slow XLM-R, CamemBERT,
                     ALBERT tokenizers; SentencepieceOp, SentencepieceTokenizeOp); see tfbert.graph_tokenizers.
  predict_text_pair  text, text_pair: string [batch] -> the same outputs, in the exports of models trained on
                     text pairs (train.py leaves it out of the others). (A separate signature: TF Serving
                     requires a row-format request to name every input of a signature.)
  predict_ids        input_ids, attention_mask, token_type_ids: int64 [batch, length] -> the same outputs. Always
                     there; the only signature when the tokenizer has no exact in-graph form (MeCab-based Japanese,
                     fast SentencePiece re-implementations, other kinds): clients tokenise with the tokenizer in
                     assets.extra/tfbert/tokenizer.

Probabilities are a float32 softmax of the logits whatever precision policy the model computes in.
Loading the export in Python needs ``import tensorflow_text`` first (the ops live there).

Example:
    >>> version = export_saved_model(model, tokenizer, id2label={0: "neg", 1: "pos"}, max_length=128,
    ...                              base_dir="output/run/saved_model")  # doctest: +SKIP
    >>> tfbert.predictors.SavedModelPredictor(version).predict(["great"])  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

from tfbert import fused_ops, runtime
from tfbert.errors import TfbertError
from tfbert.graph_tokenizers import in_graph_tokenization, text_encoder
from tfbert.model_settings import EXPORT_METADATA, ModelSettings
from tfbert.task_export import describe, task_module_class
from tfbert.windows import WINDOW_INPUTS, window_signatures

logger = logging.getLogger(__name__)

EXTRA, METADATA = EXPORT_METADATA.parent, EXPORT_METADATA.name
OUTPUTS = {
    "probabilities": "float32 [batch, classes]: softmax over the labels, in float32",
    "label_id": "int64 [batch]: index of the most probable label",
    "label": "string [batch]: name of the most probable label",
    "label_names": "string [batch, classes]: the label of each probability column (same in every row)",
}
ID_INPUTS = {key: "int64 [batch, length]" for key in ("input_ids", "attention_mask", "token_type_ids")}
# TF Serving runs these requests once when it loads a version, before it serves it (its "SavedModel warmup").
WARMUP_REQUESTS = Path("assets.extra") / "tf_serving_warmup_requests"


def _next_version(base: Path) -> int:
    versions = [int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()] if base.is_dir() else []
    return max(versions, default=0) + 1


# saved_model.pb is one protocol buffer, at most 2 GiB: models with more weights than this keep them as variables.
MAX_WEIGHTS_IN_GRAPH = 1 << 30


@functools.lru_cache(maxsize=None)
def _remapper_safe_layer_norm_class():
    import tensorflow as tf

    class RemapperSafeLayerNorm(tf.keras.layers.LayerNormalization):
        """LayerNormalization over the last axis, in float32, written so that TensorFlow's oneDNN remapper
        leaves it alone.

        The remapper fuses Keras' formulations (moments + batch normalisation once gamma and beta are graph
        constants, as seen on MiniLM; by its source also the FusedBatchNormV3 form Keras uses for epsilons
        of 1e-5 and more) into ``_MklLayerNorm`` without passing the layer's epsilon on, so the op's
        default (1e-3) replaces BERT's 1e-12: probabilities moved by up to 0.13 on AG News. Its patterns
        need Square (not SquaredDifference), ``x * scale + (beta - mean * scale)`` or FusedBatchNormV3.
        """

        def call(self, inputs):
            if self.axis != [inputs.shape.rank - 1]:
                return super().call(inputs)
            x = tf.cast(inputs, tf.float32)
            mean = tf.reduce_mean(x, axis=-1, keepdims=True)
            variance = tf.reduce_mean(tf.math.squared_difference(x, mean), axis=-1, keepdims=True)
            outputs = (x - mean) * tf.math.rsqrt(variance + self.epsilon)
            if self.scale:
                outputs = outputs * tf.cast(self.gamma, tf.float32)
            if self.center:
                outputs = outputs + tf.cast(self.beta, tf.float32)
            return tf.cast(outputs, inputs.dtype)

    return RemapperSafeLayerNorm


@contextlib.contextmanager
def _remapper_safe_layer_norms(model):
    """Trace ``model`` with :class:`RemapperSafeLayerNorm` in place of its LayerNormalization layers."""
    import tensorflow as tf

    swapped = [layer for layer in model.submodules if type(layer) is tf.keras.layers.LayerNormalization]
    for layer in swapped:
        fused_ops.set_layer_class(layer, _remapper_safe_layer_norm_class())
    try:
        yield
    finally:
        for layer in swapped:
            fused_ops.set_layer_class(layer, tf.keras.layers.LayerNormalization)


def traced_forward(model, uses_token_types: bool):
    """The model's float32 logits as a concrete function of (input_ids, attention_mask, token_type_ids), reading
    the model's variables. A Keras 3 classifier (tfbert.keras_backend) is traced by
    tfbert.keras_serving.trace_forward instead, in its serving form."""
    import tensorflow as tf

    from tfbert import keras_serving

    if keras_serving.is_keras3_classifier(model):
        return keras_serving.trace_forward(model, uses_token_types)
    ids_spec = tf.TensorSpec([None, None], tf.int64)

    @tf.function(input_signature=[ids_spec, ids_spec, ids_spec])
    def forward(input_ids, attention_mask, token_type_ids):
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if uses_token_types:
            inputs["token_type_ids"] = token_type_ids
        # float32 even when the model computes in (b)float16 under a mixed precision policy.
        return tf.cast(model(inputs, training=False).logits, tf.float32)

    with _remapper_safe_layer_norms(model):  # also with variables: the FusedBatchNormV3 pattern needs no constants
        return forward.get_concrete_function()


def model_forward(model, uses_token_types: bool, weights_in_graph: bool = True):
    """:func:`traced_forward` with the weights where the export keeps them, and the variables an export must keep
    for it (none when its weights are graph constants): see :func:`freeze_weights`."""
    return freeze_weights(traced_forward(model, uses_token_types), model.weights, weights_in_graph,
                          model.dtype_policy.compute_dtype)


def freeze_weights(traced, weights, weights_in_graph: bool = True, compute_dtype: str = "float32"):
    """``traced`` with its weights where the export keeps them, and the variables the export must save for it.

    - Graph constants (``weights_in_graph``, up to :data:`MAX_WEIGHTS_IN_GRAPH`; no variables): TensorFlow's graph
      optimiser lays them out for oneDNN once per signature, on its first call: bfloat16 MiniLM answers one text
      in ~10 instead of ~12 ms and batches ~10 % faster (as variables do where oneDNN may keep their layout:
      runtime.import_tensorflow(frozen_weights=True)), for a copy of the weights in every signature's optimised
      graph and in every function that calls the forward pass (its server: 1.9 instead of 0.9 GiB; docs/serving.md).
    - Else, computed in half precision: the frozen graph reading variables that hold each weight as the graph
      computes with it (tfbert.frozen_graph.freeze_to_variables): no cast on any call, the weights of the
      constants to the bit (answers within rounding of theirs: oneDNN picks its kernel by whether a weight is one).
    - Else (float32, or over the limit): ``traced`` itself and ``weights``, read as they are.
    Both frozen forms store the weights in the precision they are computed in (half the bytes in bfloat16).
    """
    from tfbert.frozen_graph import freeze, freeze_to_variables

    # Keras 3 variables name their dtype as a string, tf.Variables as a tf.DType.
    weight_bytes = sum(int(np.prod(w.shape)) * np.dtype(getattr(w.dtype, "as_numpy_dtype", w.dtype)).itemsize
                       for w in weights)
    if weight_bytes > MAX_WEIGHTS_IN_GRAPH:
        return traced, list(weights)
    if weights_in_graph:
        return freeze(traced), []
    if compute_dtype in ("bfloat16", "float16"):
        return freeze_to_variables(traced)
    return traced, list(weights)


def warmup_inputs(input_specs: dict) -> dict[str, np.ndarray]:
    """A one-row input for each of a signature's inputs (name -> TensorSpec): the text "warm up", or id 0,
    which every vocabulary has (and token type 0, which every model has)."""
    return {key: np.full([1] * spec.shape.rank, b"warm up", dtype=object) if spec.dtype.name == "string"
            else np.zeros([1] * spec.shape.rank, spec.dtype.as_numpy_dtype) for key, spec in input_specs.items()}


def _write_warmup_requests(path: Path, signatures: dict) -> None:
    """TF Serving's warm-up file: one PredictRequest per signature, so that the graph optimisation of each
    signature's first call (~6 s for MiniLM with graph-constant weights) happens at load, not on a client's
    first request."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for name, function in signatures.items():
            request = predict_pb2.PredictRequest()
            request.model_spec.signature_name = name
            # Traced here with positional arguments; their specs carry the names the signature's inputs get.
            specs = {spec.name: spec for spec in tf.nest.flatten(function.structured_input_signature)}
            for key, value in warmup_inputs(specs).items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def _classifier_class():
    import tensorflow as tf

    class TextClassifier(tf.Module):
        """The model's forward pass (and its in-graph tokenizer, if any) as a tf.Module whose functions are
        signatures. ``weights`` (the variables the forward pass reads) are kept only when it does not hold them
        as constants: the variables alone, not the Keras model, whose ~1,500 tracked objects and layer functions
        the export would otherwise save and every load restore."""

        def __init__(self, forward, encoder, labels: list[str], weights=None):
            super().__init__()
            self.forward, self.encoder = forward, encoder
            self.weights = list(weights or [])
            self.labels = tf.constant(labels)

        def logits(self, input_ids, attention_mask, token_type_ids):
            # The frozen forward pass returns a list of one tensor, the one with variables the tensor itself.
            return tf.nest.flatten(self.forward(input_ids, attention_mask, token_type_ids))[0]

        def classify(self, input_ids, attention_mask, token_type_ids):
            return self.outputs(self.logits(input_ids, attention_mask, token_type_ids))

        def outputs(self, logits):
            """The signature's outputs for float32 logits [batch, classes] (tfbert.task_export for other tasks)."""
            probabilities = tf.nn.softmax(logits, axis=-1)
            label_id = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
            label_names = tf.tile(self.labels[tf.newaxis, :], [tf.shape(label_id)[0], 1])
            return {"probabilities": probabilities, "label_id": label_id, "label": tf.gather(self.labels, label_id),
                    "label_names": label_names}

    return TextClassifier


@runtime.returning_freed_memory  # its copies of the graph (~1 GiB for MiniLM) die with its locals
def export_saved_model(model, tokenizer, *, id2label: dict[int, str], max_length: int, base_dir: str | Path,
                       truncation: str = "head", weights_in_graph: bool = True, task: str = "single_label",
                       thresholds: Optional[list[float]] = None, stride: Optional[int] = None,
                       window_pool: str = "mean", text_pairs: bool = True) -> Path:
    """Write the next numbered version under ``base_dir`` atomically and return its folder.

    The version is written to a hidden folder in ``base_dir`` and renamed into place, so TF Serving
    (which polls the base path) never sees half a model, and an existing version is never overwritten.

    Args:
        model: the trained transformers TF*ForSequenceClassification (or a Keras 3 classifier: see
            tfbert.export_keras).
        tokenizer: the Hugging Face tokenizer it was trained with (saved into the export too).
        id2label: label names by class index.
        max_length: tokens per text including [CLS]/[SEP], as in training.
        base_dir: the model base path TF Serving is pointed at (``.../saved_model``).
        truncation: head, tail or head_tail, as in training.
        weights_in_graph: store the weights as graph constants (faster one-text requests, more memory and a
            slower start: see :func:`freeze_weights`), else as variables.
        task, thresholds: multi-label or regression models get the outputs of :mod:`tfbert.task_export`.
        stride, window_pool: a model that reads long texts in windows (tfbert.windows): ``serving_default`` gives
            one answer per text, pooled in the graph from its windows' (``predict_text_pair`` too: the first text in
            every window); ``predict_windows`` takes windows tokenised by the client with each one's text index
            (``window_document``).
        text_pairs: add ``predict_text_pair``. train.py asks for it only for a model trained on text pairs:
            infer.py refuses pairs for any other, and that signature's graph (tokenising two texts) was 40 % of
            the export's, loaded by every process that serves it (0.9 s of a MiniLM export's 2.4 s load).

    Example:
        >>> export_saved_model(model, tokenizer, id2label={0: "neg", 1: "pos"}, max_length=128,
        ...                    base_dir="output/run/saved_model")  # doctest: +SKIP
        PosixPath('output/run/saved_model/1')
    """
    import tensorflow as tf

    if sorted(id2label) != list(range(len(id2label))) or not id2label:
        raise TfbertError(f"id2label {id2label}: needs the classes 0..n-1, each with a name")
    labels = [str(id2label[i]) for i in range(len(id2label))]
    positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(positions, int) and max_length > positions:
        raise TfbertError(f"--max_length {max_length}: the model has only {positions} positions; "
                          f"use --max_length {positions} or less")
    base = Path(base_dir)
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise TfbertError(f"cannot create the SavedModel folder {base} ({error.strerror}); check the output folder") \
            from None
    version = _next_version(base)
    staging = Path(tempfile.mkdtemp(prefix=f".partial-{version}-", dir=base))
    try:
        tokenizer.save_pretrained(staging / EXTRA / "tokenizer")
        exact, reason = in_graph_tokenization(tokenizer, truncation)
        encoder = text_encoder(tokenizer, max_length, truncation, staging / ".vocab") if exact else None
        uses_token_types = "token_type_ids" in tokenizer.model_input_names
        forward, weights = model_forward(model, uses_token_types, weights_in_graph)
        module = task_module_class(_classifier_class(), task, thresholds)(forward, encoder, labels, weights=weights)
        ids_spec = tf.TensorSpec([None, None], tf.int64)

        @tf.function(input_signature=[ids_spec, ids_spec, ids_spec])
        def predict_ids(input_ids, attention_mask, token_type_ids):
            return module.classify(input_ids, attention_mask, token_type_ids)

        signatures = {"predict_ids": predict_ids.get_concrete_function()}
        described = {"predict_ids": {"inputs": ID_INPUTS, "outputs": OUTPUTS}}
        if stride is not None:
            signatures.update(window_signatures(module, task, stride, window_pool, exact, text_pairs))
            described["predict_windows"] = {"inputs": {**ID_INPUTS, **WINDOW_INPUTS}, "outputs": OUTPUTS}
        elif exact:
            from tfbert.length_groups import in_length_groups

            @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
            def serve_text(text):
                return in_length_groups(module.classify, *module.encoder.encode(text))  # any order, any lengths

            @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text"),
                                          tf.TensorSpec([None], tf.string, name="text_pair")])
            def serve_text_pair(text, text_pair):
                return in_length_groups(module.classify, *module.encoder.encode(text, text_pair))

            signatures["serving_default"] = serve_text.get_concrete_function()
            if text_pairs:
                signatures["predict_text_pair"] = serve_text_pair.get_concrete_function()
        if exact:
            described["serving_default"] = {"inputs": {"text": "string [batch]"}, "outputs": OUTPUTS}
            if text_pairs:
                described["predict_text_pair"] = {"inputs": {"text": "string [batch]",
                                                             "text_pair": "string [batch]"}, "outputs": OUTPUTS}
        from tfbert.tokenizers import describe_tokenizer

        settings = ModelSettings(labels=labels, max_length=max_length, truncation=truncation,
                                 uses_token_type_ids=uses_token_types, task=task, thresholds=thresholds,
                                 text_pairs=text_pairs, long_text="truncate" if stride is None else "window",
                                 **({} if stride is None else {"stride": stride, "window_pool": window_pool}))
        described = describe(described, task)
        export_only = {  # what this export adds to the settings every model folder records
            "in_graph_tokenization": exact,
            "tokenization_note": reason,
            "tokenizer_files": str(EXTRA / "tokenizer"),
            "tokenizer": describe_tokenizer(tokenizer),
            "probabilities_dtype": "float32",
            "compute_policy": getattr(getattr(model, "dtype_policy", None), "name", "float32"),
            "weights": "variables" if weights else "graph constants",
            "signatures": described,
            "version": version,
        }
        tf.saved_model.save(module, str(staging), signatures=signatures)
        shutil.rmtree(staging / ".vocab", ignore_errors=True)  # copied into assets/ by the save
        _write_warmup_requests(staging / WARMUP_REQUESTS, signatures)
        settings.write(staging / EXTRA, METADATA, **export_only)
        target = base / str(version)
        os.rename(staging, target)  # fails rather than replace if another export took this number meanwhile
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise TfbertError(f"cannot write the SavedModel under {base} ({error.strerror or error}); "
                          "check the output folder and free space") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not exact:
        logger.warning("SavedModel: no in-graph tokenisation (%s); it has predict_ids only", reason)
    return target
