"""Run a model on a batch in length groups, inside the graph, and give the answers back in the batch's order.

A batch padded to its longest text spends most of its work on padding when texts of very different
lengths arrive together (clients send them in whatever order they come). The serving signatures sort
the rows by token count, run fixed-size groups of the sorted rows each padded only to its own longest
row, and put the outputs back in the original order with the inverse permutation. Only core TensorFlow
ops (TopKV2 for the sort, While with TensorList ops, Gather, InvertPermutation), so TF Serving runs it.

Example:
    >>> outputs = in_length_groups(module.classify, input_ids, attention_mask, token_type_ids)  # doctest: +SKIP
"""

from __future__ import annotations

# Rows per group. AG News, MiniLM, batches of 32 in the file's order: see docs/serving.md for the figures.
GROUP_ROWS = 8


def _output_specs(fn, specs):
    """fn's output structure and each output's dtype and shape, traced on its own (nothing is added to the
    calling graph, so the model's graph is not copied)."""
    import tensorflow as tf

    traced = tf.function(fn, autograph=False).get_concrete_function(*specs)
    return traced.structured_outputs


def in_length_groups(fn, input_ids, attention_mask, token_type_ids, group_rows: int = GROUP_ROWS):
    """``fn(input_ids, attention_mask, token_type_ids)`` computed on groups of ``group_rows`` rows sorted by
    token count, each group cut to its own longest row; outputs in the rows' original order.

    Inputs are int [batch, length] padded on the right (as the in-graph encoders pad); every output of ``fn``
    (a tensor or a nest of them) must have the batch as its first dimension and depend on its own row only,
    as a classifier's do. Call it inside a tf.function.

    Args:
        fn: the per-row computation, e.g. the export's classify.
        input_ids, attention_mask, token_type_ids: the padded batch.
        group_rows: rows per group (the last group may have fewer).

    Example:
        >>> @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])  # doctest: +SKIP
        ... def serve_text(text):
        ...     return in_length_groups(module.classify, *module.encoder.encode(text))
    """
    import tensorflow as tf

    inputs = [input_ids, attention_mask, token_type_ids]
    specs = [tf.TensorSpec([None, None], x.dtype) for x in inputs]
    structure = _output_specs(fn, specs)
    flat_specs = tf.nest.flatten(structure)
    lengths = tf.reduce_sum(tf.cast(tf.not_equal(attention_mask, 0), tf.int32), axis=1)
    order = tf.argsort(lengths, stable=True)
    ordered = [tf.gather(x, order) for x in inputs]
    sorted_lengths = tf.gather(lengths, order)
    rows = tf.shape(input_ids)[0]
    groups = (rows + group_rows - 1) // group_rows
    arrays = [tf.TensorArray(spec.dtype, size=groups, infer_shape=False, element_shape=spec.shape)
              for spec in flat_specs]

    def body(group, arrays):
        start = group * group_rows
        end = tf.minimum(start + group_rows, rows)
        width = tf.maximum(sorted_lengths[end - 1], 1)  # the group's longest row: rows are sorted
        outputs = tf.nest.flatten(fn(*[x[start:end, :width] for x in ordered]))
        return group + 1, [array.write(group, tf.convert_to_tensor(output)) for array, output in zip(arrays, outputs)]

    # One group at a time: each group already keeps every core busy, and memory stays that of one group.
    _, arrays = tf.while_loop(lambda group, _: group < groups, body, [tf.constant(0), arrays], parallel_iterations=1)
    restore = tf.math.invert_permutation(order)
    flat = [tf.gather(array.concat(), restore) for array in arrays]
    return tf.nest.pack_sequence_as(structure, flat)
