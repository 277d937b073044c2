"""A traced forward pass with its weights frozen into the graph, stored in the precision it computes them in.

Frozen under a mixed precision policy, every weight is a float32 constant that the graph casts to bfloat16 (or
float16) on its way to the op that uses it: the SavedModel would store twice the bytes the model computes with,
and each process that loads it would parse them and fold the casts again on its first call. :func:`freeze`
stores each such constant already cast, by TensorFlow's own Cast kernel, so the values the graph computes with
are the same bits; only the float32 copies go. The cast happens on the frozen GraphDef, before TensorFlow builds a
function from it, so no float32 copy of the function is ever made.

Example:
    >>> frozen = freeze(forward.get_concrete_function())  # doctest: +SKIP
"""

from __future__ import annotations

from collections import defaultdict

# Ops a weight passes through unchanged on its way to its cast (by value: a gather of rows commutes with an
# elementwise cast), with the attribute that names the weight's dtype; GatherV2 only through its first input.
PASS_THROUGH = {"Identity": "T", "GatherV2": "Tparams"}


def freeze(traced):
    """``traced`` (a concrete function) with the variables it reads turned into graph constants, those only used
    in half precision stored in it (:func:`cast_constants`): what convert_variables_to_constants_v2 returns, with
    the cast done on its GraphDef before the function is built (these are its own three steps)."""
    from tensorflow.python.framework import convert_to_constants

    converter_data = convert_to_constants._FunctionConverterDataInEager(
        func=traced, lower_control_flow=True, aggressive_inlining=False)
    graph_def, converted_inputs = convert_to_constants._replace_variables_by_constants(converter_data=converter_data)
    del converter_data  # its copy of the graph and of every weight's value
    cast_constants(graph_def, outputs={tensor.name.split(":")[0] for tensor in traced.outputs})
    return convert_to_constants._construct_concrete_function(traced, graph_def, converted_inputs)


def cast_constants(graph_def, outputs: set[str] = frozenset()) -> int:
    """Store every float32 constant of ``graph_def`` whose every use ends in a cast to one half precision in that
    precision, in place; return how many changed. ``outputs``: the names of nodes the function returns (a value
    that leaves the graph is never changed)."""
    import tensorflow as tf

    consumers = defaultdict(list)  # node name -> (consumer, input index) for data inputs
    for node in graph_def.node:
        for index, name in enumerate(node.input):
            if not name.startswith("^"):
                consumers[name.split(":")[0]].append((node, index))

    def casts_from(name: str, path: list):
        """The dtypes the uses of node ``name`` cast it to (collecting the nodes on the way into ``path``), or
        None if a use is anything else: an op that reads the float32 value, or the function's output."""
        if name in outputs:
            return None
        targets = set()
        for consumer, index in consumers[name]:
            if consumer.op == "Cast" and not ("Truncate" in consumer.attr and consumer.attr["Truncate"].b):
                targets.add(consumer.attr["DstT"].type)
            elif consumer.op in PASS_THROUGH and (consumer.op != "GatherV2" or index == 0):
                further = casts_from(consumer.name, path)
                if further is None:
                    return None
                targets |= further
            else:
                return None
            path.append(consumer)
        return targets

    halves = {tf.bfloat16.as_datatype_enum, tf.float16.as_datatype_enum}
    changed = 0
    for node in graph_def.node:
        if node.op != "Const" or node.attr["dtype"].type != tf.float32.as_datatype_enum:
            continue
        path: list = []
        targets = casts_from(node.name, path)
        if not targets or len(targets) > 1 or not targets <= halves:
            continue
        target = targets.pop()
        value = tf.cast(tf.make_ndarray(node.attr["value"].tensor), tf.dtypes.as_dtype(target))  # the graph's kernel
        node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value.numpy()))
        node.attr["dtype"].type = target
        for step in path:
            if step.op == "Cast":  # now a no-op: an Identity keeps its name and output for its consumers
                step.op = "Identity"
                for attribute in ("SrcT", "DstT", "Truncate"):
                    step.attr.pop(attribute, None)
                step.attr["T"].type = target
            else:
                step.attr[PASS_THROUGH[step.op]].type = target
        changed += 1
    return changed
