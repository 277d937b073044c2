"""Faster layers on CPU. Training: exact GELU as one XLA kernel, dropout from 16-bit masks (transformers' layers:
:func:`fuse`; Keras 3's on TensorFlow: :func:`fuse_keras3`); serving:
Dense and GELU in the shape oneDNN fuses, and a last encoder layer that computes the first token only.

Without XLA, TensorFlow runs BERT's exact GELU as about seven elementwise passes forward and ten
backward over the model's largest activation (batch x length x intermediate size), and dropout
draws a float per element then compares, selects and scales in further passes. On a CPU these
passes are memory-bound: in a profile of MiniLM training in bfloat16 on 2 cores, GELU took 26 %
of the step and dropout's random numbers 14 %, more than all the matrix multiplications.
Here GELU runs as one XLA kernel forward and one backward (the matrix multiplications stay
with oneDNN: compiling the whole step with XLA made bfloat16 training slower), and dropout
draws 16 random bits per element (drop probability exact to 1/65536) and keeps its mask for the
backward pass. Both compute the same functions as the layers they replace.

Exported graphs cannot use XLA (stock TF Serving runs none), so for serving the layers are rewritten
for TensorFlow's own graph optimiser instead: every Dense runs as one 2-D MatMul + BiasAdd (Keras
reshapes 3-D inputs around the MatMul only, which stops the fusion) and the feed-forward GELU moves
into its Dense, so that oneDNN computes MatMul, bias and GELU as one kernel. In a profile of the
bfloat16 MiniLM forward pass on 2 cores this took a batch [32, 64] from 124 to 106 ms.

A sequence classifier reads one token's final state ([CLS]: BERT's pooler, RoBERTa's and ELECTRA's
heads), so the last encoder layer computes only that row: its attention takes queries from the first
token and keys and values from all (the library's own cross-attention path), and its feed-forward
block runs on one row per example instead of one per token, about a seventh of MiniLM's multiply-adds.
In training too: no other row of the last layer reaches the loss, so the loss and every gradient are the
same functions. The rewrite is kept only where the logits stay the same on a probe batch.

Example:
    >>> counts = fuse(model)  # doctest: +SKIP
    >>> counts
    {'gelu': 6, 'dropout': 20, 'dense': 0, 'first_token_layer': 0}
"""

from __future__ import annotations

import functools
import math

import numpy as np

SQRT_HALF = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
ACTIVATION_ATTRIBUTES = ("intermediate_act_fn", "activation")  # where BERT-family layers keep their activation


def set_layer_class(layer, cls) -> None:
    """Give ``layer`` the class ``cls``. tf_keras' SavedModel writer puts each layer's ``call`` back as an
    instance attribute after saving, which would shadow the new class's ``call``; the class's own is the
    same method, so it is dropped."""
    layer.__dict__.pop("call", None)
    layer.__class__ = cls


@functools.lru_cache(maxsize=None)
def _kernels():
    """The XLA kernels, built once (they are traced per input shape; each compiles in ~0.1 s)."""
    import tensorflow as tf

    gelu_forward = tf.function(gelu_for_serving, jit_compile=True)

    @tf.function(jit_compile=True)
    def gelu_backward(x, dy):
        x32 = tf.cast(x, tf.float32)
        cdf = 0.5 * (1.0 + tf.math.erf(x32 * SQRT_HALF))
        pdf = INV_SQRT_2PI * tf.exp(-0.5 * x32 * x32)
        return tf.cast(tf.cast(dy, tf.float32) * (cdf + x32 * pdf), dy.dtype)

    return gelu_forward, gelu_backward


def gelu(x):
    """Exact GELU, x * Phi(x), computed in float32 whatever the input dtype, with its exact gradient."""
    import tensorflow as tf

    forward, backward = _kernels()

    @tf.custom_gradient
    def _gelu(x):
        return forward(x), lambda dy: backward(x, dy)

    return _gelu(x)


def gelu_for_serving(x):
    """Exact GELU in float32 arithmetic from plain TensorFlow ops (no XLA), for exported graphs.

    Stock TF Serving runs no XLA kernels by default; this form still avoids bfloat16's slow
    elementwise passes (erfc alone was a third of MiniLM's bfloat16 forward pass on CPU).
    """
    import tensorflow as tf

    x32 = tf.cast(x, tf.float32)
    return tf.cast(0.5 * x32 * (1.0 + tf.math.erf(x32 * SQRT_HALF)), x.dtype)


def gelu_in_dense(x):
    """Exact GELU as ``tf.nn.gelu`` writes it, the pattern TensorFlow's remapper fuses into MatMul + BiasAdd."""
    import tensorflow as tf

    return tf.nn.gelu(x, approximate=False)


def dropout_mask(shape, rate: float, dtype, seed):
    """0 or 1/(1-rate) per element, from 16 random bits each: dropped when the bits fall under rate * 2^16."""
    import tensorflow as tf

    size = tf.reduce_prod(shape)
    words = tf.random.stateless_uniform([(size + 1) // 2], seed, minval=None, maxval=None, dtype=tf.int32)
    bits = tf.reshape(tf.bitcast(words, tf.int16), [-1])[:size]
    threshold = tf.constant(-(2**15) + round(rate * 2**16), tf.int16)
    kept = tf.reshape(bits >= threshold, shape)
    return tf.where(kept, tf.constant(1.0 / (1.0 - rate), dtype), tf.constant(0.0, dtype))


def global_seed():
    """A fresh stateless seed from TensorFlow's global generator: runtime.set_seed seeds it and the training
    backups hold its state, so a resumed run draws the masks the uninterrupted one would."""
    import tensorflow as tf

    return tf.random.get_global_generator().make_seeds(1)[:, 0]


def dropout(x, rate: float):
    """Inverted dropout; its gradient is the upstream gradient times the same mask."""
    import tensorflow as tf

    return x * dropout_mask(tf.shape(x), rate, x.dtype, global_seed())


@functools.lru_cache(maxsize=None)
def _seeded_dropout_class():
    import tensorflow as tf

    class SeededDropout(tf.keras.layers.Dropout):
        """tf.keras.layers.Dropout drawing its masks from :func:`global_seed`. Stock Dropout uses TF1 stateful
        random ops, whose state lives in each op's kernel and starts over in a new process (a resumed run)."""

        def dropped(self, inputs):
            return tf.nn.experimental.stateless_dropout(inputs, self.rate, seed=global_seed(),
                                                        noise_shape=self._get_noise_shape(inputs))

        def call(self, inputs, training=None):
            if self.rate == 0:
                return tf.identity(inputs)
            if training is None:
                training = tf.keras.backend.learning_phase()
            return tf.__internal__.smart_cond.smart_cond(
                training, lambda: self.dropped(inputs), lambda: tf.identity(inputs))

    return SeededDropout


@functools.lru_cache(maxsize=None)
def _fused_dropout_class():
    class FusedDropout(_seeded_dropout_class()):
        """tf.keras.layers.Dropout computing :func:`dropout` in training."""

        def dropped(self, inputs):
            return dropout(inputs, float(self.rate))

    return FusedDropout


def seed_dropouts(model) -> int:
    """Make every stock Dropout layer left in ``model`` a :class:`SeededDropout`, in place; return how many.
    Weights, layer names and checkpoints are unchanged.

    Example:
        >>> seed_dropouts(model)  # doctest: +SKIP
        8
    """
    import tensorflow as tf

    stock = [layer for layer in model.submodules if type(layer) is tf.keras.layers.Dropout]
    for layer in stock:
        set_layer_class(layer, _seeded_dropout_class())
    return len(stock)


@functools.lru_cache(maxsize=None)
def _flat_dense_class():
    import tensorflow as tf

    class FlatDense(tf.keras.layers.Dense):
        """tf.keras.layers.Dense computing on the last axis as one 2-D MatMul + BiasAdd (+ activation).

        Keras' Dense multiplies a 3-D input through Tensordot, a Reshape on each side of the MatMul,
        so the BiasAdd and the activation come after a Reshape and the graph optimiser cannot fuse them.
        """

        def call(self, inputs):
            inputs = tf.cast(inputs, self.compute_dtype)
            leading = tf.shape(inputs)[:-1]
            kernel = tf.cast(self.kernel, self.compute_dtype)
            outputs = tf.matmul(tf.reshape(inputs, [-1, tf.shape(inputs)[-1]]), kernel)
            if self.use_bias:
                outputs = tf.nn.bias_add(outputs, tf.cast(self.bias, self.compute_dtype))
            if self.activation is not None:
                outputs = self.activation(outputs)
            outputs = tf.reshape(outputs, tf.concat([leading, [self.units]], axis=0))
            outputs.set_shape(inputs.shape[:-1].concatenate([self.units]))
            return outputs

    return FlatDense


def _move_gelu_into_dense(layer) -> bool:
    """BERT-style feed-forward blocks apply GELU after their Dense (``dense``, ``intermediate_act_fn``):
    make it the Dense's activation so that it fuses with the MatMul."""
    import tensorflow as tf

    dense = getattr(layer, "dense", None)
    function = getattr(layer, "intermediate_act_fn", None)
    if not (isinstance(dense, tf.keras.layers.Dense) and dense.activation is tf.keras.activations.linear
            and callable(function) and not isinstance(function, tf.Module) and _computes_exact_gelu(function)):
        return False
    dense.activation = gelu_in_dense
    layer.intermediate_act_fn = tf.identity
    return True


def _computes_exact_gelu(function) -> bool:
    """True when ``function`` is exact (erf) GELU: checked on values, whatever its name or module."""
    import tensorflow as tf

    probe = np.linspace(-6.0, 6.0, 241, dtype=np.float32)
    try:
        values = np.asarray(tf.cast(function(tf.constant(probe)), tf.float32))
    except Exception:  # not an elementwise activation
        return False
    expected = 0.5 * probe * (1.0 + np.vectorize(math.erf)(probe * SQRT_HALF))
    return values.shape == probe.shape and bool(np.allclose(values, expected, atol=1e-5))


LAYER_PARTS = ("attention", "intermediate", "bert_output")  # a BERT-style encoder layer (BERT, RoBERTa, ELECTRA...)


@functools.lru_cache(maxsize=None)
def _first_token_layer_class(base):
    """``base`` (a BERT-style encoder layer class) computing its output for the first token only."""

    def call(self, hidden_states, attention_mask, head_mask, encoder_hidden_states, encoder_attention_mask,
             past_key_value, output_attentions, training=False):
        first = hidden_states[:, :1]
        # Queries from the first token, keys and values from every token: the cross-attention path.
        attention_output = self.attention(
            input_tensor=first, attention_mask=attention_mask, head_mask=head_mask,
            encoder_hidden_states=hidden_states, encoder_attention_mask=attention_mask,
            past_key_value=None, output_attentions=False, training=training)[0]
        intermediate = self.intermediate(hidden_states=attention_output)
        return (self.bert_output(hidden_states=intermediate, input_tensor=attention_output, training=training),)

    return type(f"FirstToken{base.__name__}", (base,), {"call": call, "computes_first_token_only": True})


def last_layer_for_first_token(model) -> bool:
    """Make the last encoder layer of ``model`` compute the first token only, if the logits stay the same.

    Checked on values: a padded probe batch goes through the model before and after, and the rewrite is
    undone if the logits change (a head that reads other tokens, or a layer that is not BERT-style).
    """
    import tensorflow as tf

    from tfbert.modeling import encoder_layer

    if not hasattr(model, "base_model_prefix"):  # not one of transformers' models: no encoder layers to find
        return False
    layers = getattr(getattr(encoder_layer(model), "encoder", None), "layer", None)
    if not layers:
        return False
    last = layers[-1]
    if getattr(last, "computes_first_token_only", False) or getattr(last, "is_decoder", False) \
            or not all(hasattr(last, part) for part in LAYER_PARTS):
        return False
    input_ids = tf.constant([[2, 7, 5, 9, 4, 3], [2, 6, 3, 0, 0, 0]]) % model.config.vocab_size
    probe = {"input_ids": input_ids, "attention_mask": tf.constant([[1] * 6, [1, 1, 1, 0, 0, 0]])}
    expected = model(probe, training=False).logits.numpy()
    original = type(last)
    set_layer_class(last, _first_token_layer_class(original))
    try:
        logits = model(probe, training=False).logits.numpy()
    except Exception:  # a layer with other call arguments: keep the original
        logits = None
    tolerance = 1e-4 if last.compute_dtype == "float32" else 3e-2  # 16-bit: other matmul shapes round differently
    if logits is None or logits.shape != expected.shape or not np.allclose(logits, expected, rtol=0, atol=tolerance):
        set_layer_class(last, original)
        return False
    return True


def fuse(model, for_serving: bool = False) -> dict[str, int]:
    """Replace, in place, the exact-GELU activations and the dropout layers of ``model``; return the counts.

    The last encoder layer computes the first token only (:func:`last_layer_for_first_token`), for training as
    for serving. ``for_serving`` uses no XLA and leaves dropout, which inference skips: Dense layers become
    :class:`FlatDense`, feed-forward GELUs move into their Dense (:func:`gelu_in_dense`) and any other
    exact GELU becomes :func:`gelu_for_serving`.
    Weights, layer names and checkpoints are unchanged; other activations (gelu_new, relu...) stay.
    """
    import tensorflow as tf

    replacement = gelu_for_serving if for_serving else gelu
    counts = {"gelu": 0, "dropout": 0, "dense": 0}
    for layer in model.submodules:
        if for_serving and type(layer) is tf.keras.layers.Dense:
            set_layer_class(layer, _flat_dense_class())
            counts["dense"] += 1
        if for_serving and _move_gelu_into_dense(layer):
            counts["gelu"] += 1
            continue
        for attribute in ACTIVATION_ATTRIBUTES:
            function = getattr(layer, attribute, None)
            if callable(function) and not isinstance(function, tf.Module) \
                    and function not in (replacement, gelu_in_dense) and _computes_exact_gelu(function):
                setattr(layer, attribute, replacement)
                counts["gelu"] += 1
        if not for_serving and type(layer) is tf.keras.layers.Dropout and layer.noise_shape is None:
            set_layer_class(layer, _fused_dropout_class())
            counts["dropout"] += 1
    counts["first_token_layer"] = int(last_layer_for_first_token(model))
    return counts


@functools.lru_cache(maxsize=None)
def _keras3_dropout_class():
    import keras
    import tensorflow as tf

    class FusedKerasDropout(keras.layers.Dropout):
        """Keras 3's Dropout (TensorFlow backend) computing :func:`dropout_mask` in training, seeded by the layer's
        own SeedGenerator (keras.utils.set_random_seed still makes a run repeatable)."""

        def call(self, inputs, training=False):
            if not (training and self.rate > 0):
                return inputs
            seed = tf.cast(tf.math.floormod(self.seed_generator.next(), tf.int32.max - 1), tf.int32)
            return inputs * dropout_mask(tf.shape(inputs), float(self.rate), inputs.dtype, seed)

    return FusedKerasDropout


def fuse_keras3(model) -> dict[str, int]:
    """The training fusions of :func:`fuse` for a Keras 3 model on TensorFlow (keras-hub's encoder), in place:
    Dense layers whose activation is exact GELU compute it as :func:`gelu`, and Dropout layers draw 16-bit masks.
    Return the counts. Weights and saved files are unchanged (keras_backend.save writes no activations).

    Example:
        >>> fuse_keras3(model)  # doctest: +SKIP
        {'gelu': 6, 'dropout': 20}
    """
    import keras

    counts = {"gelu": 0, "dropout": 0}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.Dense) and layer.activation is not gelu \
                and _computes_exact_gelu(layer.activation):
            layer.activation = gelu
            counts["gelu"] += 1
        if type(layer) is keras.layers.Dropout and layer.noise_shape is None:
            set_layer_class(layer, _keras3_dropout_class())
            counts["dropout"] += 1
    return counts
