import numpy as np
import pytest


def test_gelu_and_its_gradient_equal_keras_exact_gelu():
    import tensorflow as tf

    from tfbert.fused_ops import gelu

    x = tf.constant(np.random.default_rng(0).normal(scale=3.0, size=(3, 5, 17)).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        fused, reference = gelu(x), tf.keras.activations.gelu(x, approximate=False)
    np.testing.assert_allclose(fused, reference, atol=2e-6)
    np.testing.assert_allclose(tape.gradient(fused, x), tape.gradient(reference, x), atol=2e-6)
    assert gelu(tf.cast(x, tf.bfloat16)).dtype == tf.bfloat16


def test_dropout_drops_the_rate_scales_the_rest_and_masks_the_gradient():
    import tensorflow as tf

    from tfbert.fused_ops import dropout

    tf.random.set_seed(3)
    x = tf.ones([400, 500])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = dropout(x, 0.1)
    dropped = float(tf.reduce_mean(tf.cast(y == 0, tf.float32)))
    assert dropped == pytest.approx(0.1, abs=0.003)  # 200,000 draws: 3 sigma is 0.002
    assert set(np.unique(y.numpy())) == {0.0, np.float32(1 / 0.9)}
    np.testing.assert_array_equal(tape.gradient(y, x), y)  # d(x * mask)/dx = mask
    assert not np.array_equal(dropout(x, 0.1), dropout(x, 0.1))  # a new mask on every call


def test_fuse_replaces_exact_gelu_and_dropout_and_keeps_the_outputs(tiny_model_dir):
    import tensorflow as tf

    from tfbert.fused_ops import fuse
    from tfbert.modeling import load_for_training

    model = load_for_training(tiny_model_dir, ["a", "b"])
    inputs = {"input_ids": tf.constant([[2, 10, 11, 12, 3]]), "attention_mask": tf.ones([1, 5], tf.int32)}
    before = model(inputs, training=False).logits.numpy()
    counts = fuse(model)
    # 2 layers: one intermediate GELU each; dropout: embeddings + 3 per layer + classifier = 8; the last layer
    assert counts == {"gelu": 2, "dropout": 8, "dense": 0, "first_token_layer": 1}
    np.testing.assert_allclose(model(inputs, training=False).logits, before, atol=1e-5)
    assert fuse(model) == {"gelu": 0, "dropout": 0, "dense": 0, "first_token_layer": 0}  # idempotent
    a, b = (model(inputs, training=True).logits.numpy() for _ in range(2))
    assert not np.allclose(a, b)  # dropout is active in training


def test_the_first_token_last_layer_trains_on_the_same_loss_and_gradients(tiny_model_dir):
    import tensorflow as tf

    from tfbert.fused_ops import fuse
    from tfbert.modeling import load_for_training

    model = load_for_training(tiny_model_dir, ["a", "b", "c"])
    batch = {"input_ids": tf.constant([[2, 10, 11, 12, 3], [2, 12, 3, 0, 0], [2, 14, 15, 16, 3]]),
             "attention_mask": tf.constant([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])}
    labels = tf.constant([0, 2, 1])

    def loss_and_gradients():
        with tf.GradientTape() as tape:  # dropout off: the same function twice
            logits = model(batch, training=False).logits
            loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
        return loss.numpy(), [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, model.trainable_variables)]

    loss, gradients = loss_and_gradients()
    assert fuse(model)["first_token_layer"] == 1 and model.bert.encoder.layer[-1].computes_first_token_only
    fused_loss, fused_gradients = loss_and_gradients()
    assert fused_loss == pytest.approx(loss, abs=1e-6)
    assert len(fused_gradients) == len(gradients) == len(model.trainable_variables)
    for variable, fused, original in zip(model.trainable_variables, fused_gradients, gradients):
        assert np.abs(original).max() > 0, variable.name  # every weight takes part, the last layer's too
        np.testing.assert_allclose(fused, original, atol=1e-6, err_msg=variable.name)


@pytest.mark.slow
def test_serving_rewrite_keeps_the_outputs_and_the_export_has_no_xla(tiny_model_dir, tmp_path):
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    from tfbert.export import export_saved_model
    from tfbert.fused_ops import fuse, gelu_in_dense
    from tfbert.modeling import load_for_training, load_tokenizer

    model = load_for_training(tiny_model_dir, ["a", "b"])
    inputs = {"input_ids": tf.constant([[2, 10, 11, 12, 3]]), "attention_mask": tf.ones([1, 5], tf.int32)}
    before = model(inputs, training=False).logits.numpy()
    batch = {"input_ids": tf.constant([[2, 10, 11, 3], [2, 12, 3, 0]]),
             "attention_mask": tf.constant([[1, 1, 1, 1], [1, 1, 1, 0]])}
    batch_before = model(batch, training=False).logits.numpy()
    # Dense: 6 per layer (query, key, value, attention output, intermediate, output), pooler, classifier.
    assert fuse(model, for_serving=True) == {"gelu": 2, "dropout": 0, "dense": 14, "first_token_layer": 1}
    assert fuse(model, for_serving=True) == {"gelu": 0, "dropout": 0, "dense": 0, "first_token_layer": 0}  # idempotent
    intermediate = model.bert.encoder.layer[0].intermediate
    assert intermediate.dense.activation is gelu_in_dense and intermediate.intermediate_act_fn is tf.identity
    assert model.bert.encoder.layer[-1].computes_first_token_only
    assert not getattr(model.bert.encoder.layer[0], "computes_first_token_only", False)
    np.testing.assert_allclose(model(inputs, training=False).logits, before, atol=1e-5)
    np.testing.assert_allclose(model(batch, training=False).logits, batch_before, atol=1e-5)  # padding masked
    hidden = model.bert(batch, training=False).last_hidden_state
    assert hidden.shape[:2] == (2, 1)  # the last layer's output: the first token's row only
    version = export_saved_model(model, load_tokenizer(tiny_model_dir), id2label={0: "a", 1: "b"},
                                 max_length=16, base_dir=tmp_path)
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((version / "saved_model.pb").read_bytes())
    graph = saved.meta_graphs[0].graph_def
    functions = list(graph.library.function)
    assert functions  # the signatures' bodies
    # Stock TF Serving runs no XLA: no function may demand compilation, no node may be an XLA op.
    assert not any(f.attr["_XlaMustCompile"].b for f in functions)
    ops = {node.op for f in functions for node in f.node_def} | {node.op for node in graph.node}
    assert "Erfc" in ops and not any(op.startswith("Xla") for op in ops)  # tf.nn.gelu, exact


def test_last_layer_stays_whole_when_the_head_reads_every_token(tiny_model_dir):
    import tensorflow as tf

    from tfbert.fused_ops import last_layer_for_first_token
    from tfbert.modeling import load_for_training

    model = load_for_training(tiny_model_dir, ["a", "b"])
    pooler = model.bert.pooler

    class MeanPooler(type(pooler)):  # a head that averages the tokens instead of reading the first
        def call(self, hidden_states):
            return self.dense(tf.reduce_mean(hidden_states, axis=1))

    pooler.__class__ = MeanPooler
    batch = {"input_ids": tf.constant([[2, 10, 11, 3], [2, 12, 3, 0]]),
             "attention_mask": tf.constant([[1, 1, 1, 1], [1, 1, 1, 0]])}
    before = model(batch, training=False).logits.numpy()
    assert last_layer_for_first_token(model) is False
    assert not getattr(model.bert.encoder.layer[-1], "computes_first_token_only", False)
    np.testing.assert_allclose(model(batch, training=False).logits, before, atol=1e-6)


@pytest.mark.parametrize("family, rewritten", [("roberta", True), ("electra", True), ("albert", False),
                                                ("distilbert", False)])
def test_first_token_layer_on_other_families(family, rewritten):
    """RoBERTa's and ELECTRA's heads read the first token too; ALBERT shares its layers and DistilBERT's
    blocks are built otherwise: those stay whole. The logits never change."""
    import tensorflow as tf
    from conftest import tiny_classifier

    from tfbert.fused_ops import fuse

    model = tiny_classifier(family)
    batch = {"input_ids": tf.constant([[3, 10, 11, 12, 4], [3, 13, 4, 1, 1]]),
             "attention_mask": tf.constant([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])}
    before = model(batch, training=False).logits.numpy()
    assert fuse(model, for_serving=True)["first_token_layer"] == int(rewritten)
    np.testing.assert_allclose(model(batch, training=False).logits, before, atol=1e-5)


def test_a_new_layer_class_takes_effect_after_the_model_was_saved(tmp_path):
    """tf_keras' SavedModel writer leaves each layer's original ``call`` on the instance: a class swapped in
    afterwards (the export's remapper-safe LayerNorm) must still be the one that runs."""
    import tensorflow as tf

    from tfbert.fused_ops import set_layer_class

    class Doubled(tf.keras.layers.Dense):
        def call(self, inputs):
            return 2.0 * super().call(inputs)

    dense = tf.keras.layers.Dense(3)
    model = tf.keras.Sequential([tf.keras.Input([4]), dense])
    x = tf.ones([2, 4])
    expected = model(x).numpy()
    tf.saved_model.save(model, str(tmp_path / "saved"))
    assert "call" in vars(dense)  # what the writer leaves behind
    set_layer_class(dense, Doubled)
    np.testing.assert_allclose(model(x), 2.0 * expected, rtol=1e-6)
    set_layer_class(dense, tf.keras.layers.Dense)
    np.testing.assert_allclose(model(x), expected, rtol=1e-6)
