"""Trace-time rewrites of a Keras 3 (keras-hub) classifier for its serving graph; the weights are untouched.

Inside :func:`serving_rewrites` the model's layers compute the same numbers in forms that serve faster or
more safely on CPU (the counterpart of tfbert.fused_ops' serving rewrites of transformers' layers):
  - LayerNormalization in float32 as ``(x - mean) * rsqrt(var + eps) * gamma + beta``: Keras 3's own
    ``x * inv + (beta - mean * inv)`` is the pattern TensorFlow's oneDNN remapper fuses into ``_MklLayerNorm``
    without the layer's epsilon once the weights are graph constants (see tfbert.export).
  - keras-hub's TransformerEncoder with every projection as one 2-D MatMul + BiasAdd (keras' EinsumDense and
    Dense run 3-D einsums, which oneDNN's fusions do not match), the feed-forward activation on the MatMul.
  - the last encoder layer for the first token only: the classifier reads only that row (BERT's pooler,
    RoBERTa's and DistilBERT's heads), so its queries and feed-forward block take one row per example.

Example:
    >>> with serving_rewrites(model):  # doctest: +SKIP
    ...     traced = forward.get_concrete_function()
"""

from __future__ import annotations

import contextlib
import functools
import math

from tfbert import fused_ops


def is_keras3_classifier(model) -> bool:
    """Whether ``model`` is a classifier from tfbert.keras_backend (not one of transformers' TF classes).

    Example:
        >>> is_keras3_classifier(tfbert.keras_backend.load("run/model"))  # doctest: +SKIP
        True
    """
    return hasattr(model, "tfbert_settings")  # set by keras_backend on the classifiers it builds


def model_input_names(model) -> list[str]:
    """The names of the Keras 3 classifier's inputs (``token_type_ids`` only for BERT and ALBERT).

    Example:
        >>> model_input_names(model)  # doctest: +SKIP
        ['input_ids', 'attention_mask', 'token_type_ids']
    """
    return list(model.input) if isinstance(model.input, dict) else [tensor.name for tensor in model.inputs]


def trace_forward(model, uses_token_types: bool = True):
    """The Keras 3 classifier's float32 logits, in its serving form, as a concrete function of int64
    (input_ids, attention_mask, token_type_ids): what tfbert.export.model_forward freezes for the SavedModel.

    ``token_type_ids`` reach the model only when it has that input (and ``uses_token_types``): RoBERTa's,
    XLM-R's and DistilBERT's have none, and the signature takes and ignores them, as for transformers' models.

    Example:
        >>> traced = trace_forward(model)  # doctest: +SKIP
    """
    import tensorflow as tf

    names = model_input_names(model)
    ids_spec = tf.TensorSpec([None, None], tf.int64)

    @tf.function(input_signature=[ids_spec, ids_spec, ids_spec])
    def forward(input_ids, attention_mask, token_type_ids):
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        if not uses_token_types:
            given["token_type_ids"] = tf.zeros_like(input_ids)
        # The Keras inputs are int32; float32 logits whatever the dtype policy.
        inputs = {name: tf.cast(given[name], tf.int32) for name in names}
        return tf.cast(model(inputs, training=False), tf.float32)

    with serving_rewrites(model):
        return forward.get_concrete_function()


@functools.lru_cache(maxsize=None)
def _remapper_safe_layer_norm_class():
    import keras
    import tensorflow as tf

    class RemapperSafeLayerNorm(keras.layers.LayerNormalization):
        """Keras 3 LayerNormalization over the last axis, in float32, in a form the oneDNN remapper leaves alone."""

        def call(self, inputs):
            if self.rms_scaling or list(self.axis) != [len(inputs.shape) - 1]:
                return super().call(inputs)
            x = tf.cast(inputs, tf.float32)
            mean = tf.reduce_mean(x, axis=-1, keepdims=True)
            variance = tf.reduce_mean(tf.math.squared_difference(x, mean), axis=-1, keepdims=True)
            outputs = (x - mean) * tf.math.rsqrt(variance + self.epsilon)
            if self.scale:
                outputs = outputs * tf.cast(self.gamma.value, tf.float32)
            if self.center:
                outputs = outputs + tf.cast(self.beta.value, tf.float32)
            return tf.cast(outputs, self.compute_dtype)

    return RemapperSafeLayerNorm


def _project(layer, rows, units: int, activation=None):
    """``layer`` (Dense or EinsumDense) on 2-D ``rows`` as one MatMul + BiasAdd (+ activation)."""
    import tensorflow as tf

    kernel = tf.reshape(tf.cast(layer.kernel.value, rows.dtype), [rows.shape[-1], units])
    out = tf.matmul(rows, kernel)
    if layer.bias is not None:
        out = tf.nn.bias_add(out, tf.reshape(tf.cast(layer.bias.value, rows.dtype), [units]))
    return activation(out) if activation is not None else out


def _flat_encoder_call(layer, x, padding_mask, first_token: bool):
    """keras-hub TransformerEncoder.call (post-LayerNorm, inference) in 2-D projections; with ``first_token``
    it returns [batch, 1, hidden]: the first row's output, queries from that row and keys/values from all."""
    import tensorflow as tf

    attention = layer._self_attention_layer
    heads, key_dim, value_dim = attention._num_heads, attention._key_dim, attention._value_dim
    hidden = x.shape[-1]
    batch, length = tf.shape(x)[0], tf.shape(x)[1]
    rows = 1 if first_token else length
    residual = x[:, :1] if first_token else x
    everything = tf.reshape(x, [-1, hidden])

    def split_heads(values, n, size):  # [batch * n, heads * size] -> [batch, heads, n, size]
        return tf.transpose(tf.reshape(values, [batch, n, heads, size]), [0, 2, 1, 3])

    # Keras scales the queries before the dot product; so does this, for the same rounding.
    query = _project(attention._query_dense, tf.reshape(residual, [-1, hidden]), heads * key_dim)
    query = split_heads(query * tf.cast(1.0 / math.sqrt(key_dim), x.dtype), rows, key_dim)
    key = split_heads(_project(attention._key_dense, everything, heads * key_dim), length, key_dim)
    value = split_heads(_project(attention._value_dense, everything, heads * value_dim), length, value_dim)
    scores = tf.matmul(query, key, transpose_b=True)
    if padding_mask is not None:  # keras' Softmax: adds -1e9 where the mask is 0
        # A reshape, not [:, None, None, :]: TFLite has no builtin StridedSlice with new axes.
        keep = tf.reshape(tf.cast(padding_mask, scores.dtype), [batch, 1, 1, length])
        scores += (1.0 - keep) * tf.cast(-3e4 if scores.dtype == tf.float16 else -1e9, scores.dtype)
    probabilities = tf.cast(tf.nn.softmax(tf.cast(scores, tf.float32), axis=-1), x.dtype)
    context = tf.reshape(tf.transpose(tf.matmul(probabilities, value), [0, 2, 1, 3]), [-1, heads * value_dim])
    attended = tf.reshape(_project(attention._output_dense, context, hidden), [batch, rows, hidden])
    x = layer._self_attention_layer_norm(attended + residual)
    flat = tf.reshape(x, [-1, hidden])
    intermediate = layer._feedforward_intermediate_dense
    inner = _project(intermediate, flat, intermediate.units, intermediate.activation)
    out = tf.reshape(_project(layer._feedforward_output_dense, inner, hidden), [batch, rows, hidden])
    return layer._feedforward_layer_norm(out + x)


@functools.lru_cache(maxsize=None)
def _encoder_class(first_token: bool):
    from keras_hub.layers import TransformerEncoder

    class ServingEncoder(TransformerEncoder):
        """TransformerEncoder for inference in 2-D projections (see :func:`_flat_encoder_call`)."""

        def call(self, inputs, padding_mask=None, attention_mask=None, training=None, return_attention_scores=False):
            if self.normalize_first or attention_mask is not None or return_attention_scores or training:
                return super().call(inputs, padding_mask=padding_mask, attention_mask=attention_mask,
                                    training=training, return_attention_scores=return_attention_scores)
            return _flat_encoder_call(self, inputs, padding_mask, first_token)

    ServingEncoder.__name__ = "FirstTokenEncoder" if first_token else "FlatEncoder"
    return ServingEncoder


def _layers(model) -> list:
    return list(model._flatten_layers(include_self=False, recursive=True))


def encoder_layers(model) -> list:
    """The backbone's encoder layers in order when each has weights of its own; [] otherwise (ALBERT's groups
    share theirs).

    Example:
        >>> len(encoder_layers(model))  # doctest: +SKIP
        6
    """
    from keras_hub.layers import TransformerEncoder

    for layer in _layers(model):
        stack = getattr(layer, "transformer_layers", None)
        if stack and all(isinstance(item, TransformerEncoder) for item in stack):
            return list(stack) if len(set(map(id, stack))) == len(stack) else []
    return []


@functools.lru_cache(maxsize=None)
def _left_out_class():
    from keras_hub.layers import TransformerEncoder

    class LeftOutEncoder(TransformerEncoder):
        """An encoder layer left out of the stack (tfbert.layer_drop): its input passes through."""

        def call(self, inputs, padding_mask=None, attention_mask=None, training=None, return_attention_scores=False):
            return inputs

    return LeftOutEncoder


@contextlib.contextmanager
def serving_rewrites(model, flat_encoders: bool = True, first_token: bool = True, left_out=()):
    """Trace or call ``model`` with its layers in their serving forms (see the module's docstring), and without
    the encoder layers ``left_out`` (0-based; their input passes through); everything is restored after.

    ``flat_encoders`` and ``first_token`` turn those rewrites off (the LayerNorm form always applies).

    Example:
        >>> with serving_rewrites(model, left_out=[3]):  # doctest: +SKIP
        ...     logits = model(inputs, training=False)
    """
    import keras
    from keras_hub.layers import TransformerEncoder

    layers = _layers(model)
    stack = encoder_layers(model)
    if set(left_out) - set(range(len(stack))) or (stack and len(set(left_out)) >= len(stack)):
        raise ValueError(f"left_out={list(left_out)}: give layers of 0..{len(stack) - 1}, keeping one at least")
    dropped = [stack[i] for i in left_out]
    kept = [layer for layer in stack if all(layer is not other for other in dropped)]
    last = kept[-1] if kept and flat_encoders and first_token else None
    swapped = [(layer, keras.layers.LayerNormalization, _remapper_safe_layer_norm_class())
               for layer in layers if type(layer) is keras.layers.LayerNormalization]
    for layer in layers:
        if type(layer) is not TransformerEncoder:
            continue
        if any(layer is other for other in dropped):
            swapped.append((layer, TransformerEncoder, _left_out_class()))
        elif flat_encoders:
            swapped.append((layer, TransformerEncoder, _encoder_class(layer is last)))
    for layer, _, serving in swapped:
        fused_ops.set_layer_class(layer, serving)
    try:
        yield
    finally:
        for layer, original, _ in swapped:
            fused_ops.set_layer_class(layer, original)
