"""A traced forward pass with its weights frozen into the graph, stored in the precision it computes them in.

Frozen under a mixed precision policy, every weight is a float32 constant that the graph casts to bfloat16 (or
float16) on its way to the op that uses it: the SavedModel would store twice the bytes the model computes with,
and each process that loads it would parse them and fold the casts again on its first call. :func:`freeze`
stores each such constant already cast, by TensorFlow's own Cast kernel, so the values the graph computes with
are the same bits; only the float32 copies go. The cast happens on the frozen GraphDef, before TensorFlow builds a
function from it, so no float32 copy of the function is ever made.

:func:`freeze_to_variables` gives the same graph with each weight read from a variable that holds it in that
precision: no cast on any call, and the weights once in memory instead of in every function that calls the forward
pass (TensorFlow copies a called function, constants and all, into each caller it loads and each signature it
optimises).

Example:
    >>> frozen = freeze(forward.get_concrete_function())  # doctest: +SKIP
    >>> forward_pass, variables = freeze_to_variables(forward.get_concrete_function())  # doctest: +SKIP
"""

from __future__ import annotations

from collections import defaultdict

# Ops a weight passes through unchanged on its way to its cast (by value: a gather of rows commutes with an
# elementwise cast), with the attribute that names the weight's dtype; GatherV2 only through its first input.
PASS_THROUGH = {"Identity": "T", "GatherV2": "Tparams"}


def _frozen_graph_def(traced):
    """convert_variables_to_constants_v2's first two steps on ``traced``, then :func:`cast_constants`: the frozen
    GraphDef and the indices of the captured inputs (variables) that became constants of the same names."""
    from tensorflow.python.framework import convert_to_constants

    converter_data = convert_to_constants._FunctionConverterDataInEager(
        func=traced, lower_control_flow=True, aggressive_inlining=False)
    graph_def, converted_inputs = convert_to_constants._replace_variables_by_constants(converter_data=converter_data)
    del converter_data  # its copy of the graph and of every weight's value
    cast_constants(graph_def, outputs={tensor.name.split(":")[0] for tensor in traced.outputs})
    return graph_def, converted_inputs


def freeze(traced):
    """``traced`` (a concrete function) with the variables it reads turned into graph constants, those only used
    in half precision stored in it (:func:`cast_constants`): what convert_variables_to_constants_v2 returns, with
    the cast done on its GraphDef before the function is built (these are its own three steps)."""
    from tensorflow.python.framework import convert_to_constants

    graph_def, converted_inputs = _frozen_graph_def(traced)
    return convert_to_constants._construct_concrete_function(traced, graph_def, converted_inputs)


def freeze_to_variables(traced):
    """``traced``'s frozen graph (as :func:`freeze` makes it) reading each weight from a new variable that holds the
    constant's value (in half precision where the graph only uses it so): a concrete function of the same inputs
    and outputs, and those variables, which whoever saves the function must track."""
    import tensorflow as tf

    graph_def, converted_inputs = _frozen_graph_def(traced)
    weight_nodes = {traced.graph.internal_captures[index].op.name for index in converted_inputs}
    variables = {}
    for node in graph_def.node:
        if node.name in weight_nodes and node.op == "Const":
            tensor = node.attr["value"].tensor
            variables[node.name] = tf.Variable(tf.make_ndarray(tensor), trainable=False, name=node.name)
            # A placeholder of the same name, dtype and shape, fed the variable's value on import.
            shape = tensor.tensor_shape
            node.op = "Placeholder"
            del node.attr["value"]
            node.attr["shape"].shape.CopyFrom(shape)
    specs = tf.nest.flatten(traced.structured_input_signature)
    argument_names = [tensor.name for tensor in traced.inputs[:len(specs)]]
    output_names = [tensor.name for tensor in traced.outputs]

    @tf.function(input_signature=specs, autograph=False)
    def forward(*arguments):
        feeds = dict(zip(argument_names, arguments))
        feeds.update({f"{name}:0": variable.read_value() for name, variable in variables.items()})
        return tf.graph_util.import_graph_def(graph_def, input_map=feeds, return_elements=output_names, name="frozen")

    return forward.get_concrete_function(), list(variables.values())


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
