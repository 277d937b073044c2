"""Frozen weights stored in the precision the graph computes them in, as constants or in variables: the same outputs
bit for bit, half the bytes, and a weight that something reads in float32 left as it was."""

import numpy as np
import pytest

from tfbert.frozen_graph import cast_constants, freeze, freeze_to_variables


def constants(function, more_than: int = 16) -> dict[str, tuple[str, int]]:
    """The constants of a concrete function's graph with more than ``more_than`` elements: name -> (dtype name,
    element count)."""
    import tensorflow as tf

    found = {}
    for node in function.graph.as_graph_def().node:
        if node.op == "Const":
            value = tf.make_ndarray(node.attr["value"].tensor)
            if value.size > more_than:
                found[node.name] = (tf.dtypes.as_dtype(node.attr["dtype"].type).name, value.size)
    return found


def frozen(function, *specs):
    """``function`` traced for ``specs`` and frozen three ways: by TensorFlow alone (float32 weights), by
    :func:`freeze`, and by :func:`freeze_to_variables` (the function and its variables)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    traced = tf.function(function).get_concrete_function(*specs)
    return convert_variables_to_constants_v2(traced), freeze(traced), freeze_to_variables(traced)


def variable_dtypes(variables, more_than: int = 16) -> list[tuple[str, int]]:
    return sorted((v.dtype.name, int(np.prod(v.shape))) for v in variables if np.prod(v.shape) > more_than)


def test_only_weights_whose_every_use_is_a_cast_to_half_precision_change():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    cast_only = tf.Variable(rng.normal(size=[8, 8]).astype(np.float32))  # reaches its cast through an Identity
    table = tf.Variable(rng.normal(size=[10, 8]).astype(np.float32))  # rows gathered, then cast
    also_float32 = tf.Variable(rng.normal(size=[8, 8]).astype(np.float32))  # cast, and summed in float32

    def forward(x, ids):
        half = tf.matmul(tf.cast(x, tf.bfloat16), tf.cast(tf.identity(cast_only), tf.bfloat16))
        half += tf.cast(tf.gather(table, ids), tf.bfloat16)
        half = tf.matmul(half, tf.cast(also_float32, tf.bfloat16))
        return tf.cast(half, tf.float32) + tf.reduce_sum(also_float32)

    before, after, (reading, variables) = frozen(forward, tf.TensorSpec([None, 8], tf.float32),
                                                 tf.TensorSpec([None], tf.int32))
    dtypes = sorted(constants(after).values())
    assert dtypes == [("bfloat16", 64), ("bfloat16", 80), ("float32", 64)]
    assert variable_dtypes(variables) == dtypes and constants(reading) == {}  # the same weights, in variables
    x, ids = rng.normal(size=[5, 8]).astype(np.float32), np.array([0, 3, 9, 3, 1], np.int32)
    expected = before(tf.constant(x), tf.constant(ids))[0].numpy()
    np.testing.assert_array_equal(after(tf.constant(x), tf.constant(ids))[0].numpy(), expected)
    np.testing.assert_array_equal(reading(tf.constant(x), tf.constant(ids))[0].numpy(), expected)
    assert cast_constants(after.graph.as_graph_def()) == 0  # nothing left to cast
    casts = [[node.name for node in function.graph.as_graph_def().node if node.op == "Cast"]
             for function in (after, reading)]
    assert [f"frozen/{name}" for name in casts[0]] == casts[1]  # no cast of a weight on any call


def test_a_float32_graph_is_left_as_it_is():
    import tensorflow as tf

    weight = tf.Variable(np.ones([4, 4], np.float32))
    before, after, (_, variables) = frozen(lambda x: tf.matmul(x, weight), tf.TensorSpec([None, 4], tf.float32))
    assert cast_constants(before.graph.as_graph_def()) == 0
    assert sorted(constants(after, more_than=1).values()) == [("float32", 16)] == variable_dtypes(variables, 1)


@pytest.mark.slow
def test_a_bfloat16_bert_keeps_its_outputs_bit_for_bit_in_half_the_bytes(tiny_model_dir):
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from tfbert import export, modeling

    previous = tf.keras.mixed_precision.global_policy()
    tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = modeling.load_for_training(tiny_model_dir, ["a", "b", "c"])
        tokenizer = modeling.load_tokenizer(tiny_model_dir)
        cast, no_variables = export.model_forward(model, uses_token_types=True)
        reading, variables = export.model_forward(model, uses_token_types=True, weights_in_graph=False)
        plain = convert_variables_to_constants_v2(export.traced_forward(model, uses_token_types=True))
    finally:
        tf.keras.mixed_precision.set_global_policy(previous)
    assert no_variables == []
    # The export's variables hold what the constants hold: the same dtypes and sizes, none of the model's own.
    stored = {node.name: tf.make_ndarray(node.attr["value"].tensor) for node in cast.graph.as_graph_def().node
              if node.op == "Const"}
    assert len(variables) == len(model.weights) and not {id(v) for v in variables} & {id(v) for v in model.weights}
    for variable in variables:  # each holds, to the bit, the constant of the same name
        np.testing.assert_array_equal(variable.numpy(), stored[variable.name.removesuffix(":0")])
    word_embeddings = model.bert.embeddings.weight
    by_dtype = {"bfloat16": 0, "float32": 0}
    for dtype, size in constants(cast, more_than=1).values():
        by_dtype[dtype] = by_dtype.get(dtype, 0) + size
    plain_float32 = sum(size for dtype, size in constants(plain, more_than=1).values() if dtype == "float32")
    # Everything but the LayerNorms' parameters (read in float32) is stored in bfloat16, the embeddings included.
    assert ("bfloat16", int(np.prod(word_embeddings.shape))) in constants(cast).values()
    assert by_dtype["bfloat16"] + by_dtype["float32"] == plain_float32
    assert by_dtype["float32"] < 0.1 * plain_float32
    encoded = tokenizer(["a short text", "and a somewhat longer second text to pad the first"], padding=True,
                        return_tensors="np")
    feeds = [tf.constant(encoded[key], tf.int64) for key in ("input_ids", "attention_mask", "token_type_ids")]
    expected = tf.nest.flatten(plain(*feeds))[0].numpy()
    np.testing.assert_array_equal(tf.nest.flatten(cast(*feeds))[0].numpy(), expected)
    # oneDNN lays a constant weight out for another kernel than a variable's: bfloat16 rounding apart.
    np.testing.assert_allclose(tf.nest.flatten(reading(*feeds))[0].numpy(), expected, atol=1e-2)
