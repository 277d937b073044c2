"""Trace-time rewrites of a Keras 3 (keras-hub) classifier for its serving graph; the weights are untouched.

Inside :func:`serving_rewrites` the model's layers compute the same numbers in forms that serve faster or
more safely on CPU:
  - LayerNormalization in float32 as ``(x - mean) * rsqrt(var + eps) * gamma + beta``: Keras 3's own
    ``x * inv + (beta - mean * inv)`` is the pattern TensorFlow's oneDNN remapper fuses into ``_MklLayerNorm``
    without the layer's epsilon once the weights are graph constants (see tfbert.export).

Example:
    >>> with serving_rewrites(model):  # doctest: +SKIP
    ...     traced = forward.get_concrete_function()
"""

from __future__ import annotations

import contextlib
import functools


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


def _layers(model) -> list:
    return list(model._flatten_layers(include_self=False, recursive=True))


@contextlib.contextmanager
def serving_rewrites(model):
    """Trace ``model`` with its layers in their serving forms (see the module's docstring); restored after."""
    import keras

    swapped = [layer for layer in _layers(model) if type(layer) is keras.layers.LayerNormalization]
    for layer in swapped:
        layer.__class__ = _remapper_safe_layer_norm_class()
    try:
        yield
    finally:
        for layer in swapped:
            layer.__class__ = keras.layers.LayerNormalization
