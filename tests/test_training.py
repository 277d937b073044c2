from collections import Counter

import numpy as np
import pytest

from tfbert.training import balanced_class_weight, excluded_from_decay, learning_rate_at, linear_warmup_decay


def test_learning_rate_schedule_is_linear_warmup_then_decay():
    values = [learning_rate_at(step, 1.0, warmup_steps=10, total_steps=110) for step in (0, 5, 10, 60, 110, 200)]
    assert values == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0, 0.0])
    schedule = linear_warmup_decay(1.0, 10, 110)
    for step in (0, 3, 10, 47, 109, 110):
        assert float(schedule(step)) == pytest.approx(learning_rate_at(step, 1.0, 10, 110), abs=1e-6)


def test_no_weight_decay_on_layernorm_and_bias(tiny_model_dir):
    from tfbert.modeling import load_for_training

    model = load_for_training(tiny_model_dir, ["a", "b", "c"])
    variables = model.trainable_variables
    excluded = excluded_from_decay(variables)
    names = [v.name for v in excluded]
    # 2 layers x (attention output LN + output LN) + embeddings LN = 5 LayerNorms x (gamma, beta)
    assert sum("LayerNorm" in n for n in names) == 10
    # biases: per layer q, k, v, attention-out, intermediate, output = 6; x2 layers; + pooler + classifier
    assert sum(n.split("/")[-1].startswith("bias") for n in names) == 14
    decayed = [v.name for v in variables if v.name not in set(names)]
    assert all("kernel" in n or "embeddings" in n for n in decayed)
    assert len(decayed) == len(variables) - 24


def test_optimizer_skips_decay_for_excluded_variables(tiny_model_dir):
    from tfbert.modeling import load_for_training
    from tfbert.training import make_optimizer

    model = load_for_training(tiny_model_dir, ["a", "b"])
    optimizer = make_optimizer(model, 1e-3, 0.1, 1, 10)
    optimizer.build(model.trainable_variables)
    uses = {v.name: optimizer._use_weight_decay(v) for v in model.trainable_variables}
    assert sum(not u for u in uses.values()) == len(excluded_from_decay(model.trainable_variables))


def _apply_from(model, start: list, optimizer, gradients, steps: int):
    """``optimizer`` applies ``gradients`` ``steps`` times in one traced function from the weights ``start``: each
    variable's change, and the function's op types counted."""
    import tensorflow as tf

    model.set_weights(start)
    apply = tf.function(lambda: optimizer.apply_gradients(zip(gradients, model.trainable_variables)), autograph=False)
    for _ in range(steps):
        apply()
    updates = [after - before for after, before in zip(model.get_weights(), start)]
    return updates, Counter(op.type for op in apply.get_concrete_function().graph.get_operations())


def test_the_fused_adamw_updates_as_keras_adamw(tiny_model_dir):
    """Keras' AdamW and make_optimizer's fused one, from the same start, apply the tiny BERT's real gradients (the
    word embeddings' are IndexedSlices, with a repeated row: Keras' sparse update, the fused one's dense) 3 times,
    with weight decay, clipping and the schedule."""
    import tensorflow as tf

    from tfbert.modeling import load_for_training
    from tfbert.training import classification_loss, make_optimizer

    ids = tf.constant([[2, 5, 9, 12, 3, 0], [2, 7, 7, 4, 11, 3]])
    model = load_for_training(tiny_model_dir, ["a", "b"])
    with tf.GradientTape() as tape:
        logits = model({"input_ids": ids, "attention_mask": tf.cast(ids > 0, tf.int32)}, training=False).logits
        loss = tf.reduce_mean(classification_loss(tf.constant([0, 1]), logits))
    gradients = tape.gradient(loss, model.trainable_variables)
    assert isinstance(gradients[0], tf.IndexedSlices) and not isinstance(gradients[-1], tf.IndexedSlices)
    start = model.get_weights()
    # make_optimizer's settings on Keras' own class, then make_optimizer's
    keras_adamw = tf.keras.optimizers.AdamW(learning_rate=linear_warmup_decay(1e-2, 1, 10), weight_decay=0.1,
                                            epsilon=1e-8, global_clipnorm=1.0)
    keras_adamw.exclude_from_weight_decay(var_list=excluded_from_decay(model.trainable_variables))
    updates, graphs = zip(_apply_from(model, start, keras_adamw, gradients, steps=3),
                          _apply_from(model, start, make_optimizer(model, 1e-2, 0.1, 1, 10), gradients, steps=3))
    assert graphs[1]["ResourceApplyAdam"] == len(model.trainable_variables) and "ResourceApplyAdam" not in graphs[0]
    assert "ResourceScatterAdd" in graphs[0] and "ResourceScatterAdd" not in graphs[1]
    # The decay is one product assigned, not a product then a subtraction; the beta powers made once, not per variable.
    assert "AssignSubVariableOp" in graphs[0] and "AssignSubVariableOp" not in graphs[1]
    assert graphs[1]["Pow"] == 2 < graphs[0]["Pow"]
    assert max(float(np.abs(update).max()) for update in updates[0]) > 1e-2  # the updates are not trivial
    for keras_update, fused_update in zip(*updates):
        np.testing.assert_allclose(fused_update, keras_update, rtol=1e-5, atol=5e-7)  # a few float32 steps at 1.0


def test_the_fused_adamw_updates_the_same_compiled_with_xla(tiny_model_dir):
    """With XLA (Keras compiles the update per variable where a GPU is present) each variable's update is a graph of
    its own, which makes its own scalars: the updates equal those without XLA."""
    import tensorflow as tf

    from tfbert.modeling import load_for_training
    from tfbert.training import make_optimizer

    model = load_for_training(tiny_model_dir, ["a", "b"])
    gradients = [tf.random.stateless_normal(v.shape, seed=(i, 0)) for i, v in enumerate(model.trainable_variables)]
    start = model.get_weights()
    updates = []
    for jit in (False, True):
        optimizer = make_optimizer(model, 1e-2, 0.1, 1, 10)
        optimizer.jit_compile = jit  # Keras turns it off without a GPU
        updates.append(_apply_from(model, start, optimizer, gradients, steps=2)[0])
    assert max(float(np.abs(update).max()) for update in updates[0]) > 1e-3
    for plain, compiled in zip(*updates):
        np.testing.assert_allclose(compiled, plain, rtol=1e-5, atol=1e-7)


def test_balanced_class_weight():
    weights = balanced_class_weight(np.array([0, 0, 0, 1]), num_classes=3)
    assert weights == pytest.approx({0: 4 / 6, 1: 2.0, 2: 1.0})


def _model_without_dropout(tiny_model_dir):
    """The tiny classifier (3 labels) from the same seeded start, its dropout off."""
    import tensorflow as tf

    from tfbert.modeling import load_for_training

    tf.keras.utils.set_random_seed(0)
    model = load_for_training(tiny_model_dir, ["a", "b", "c"])
    for layer in model.submodules:
        if isinstance(layer, tf.keras.layers.Dropout):
            layer.rate = 0.0
    return model


def _one_update(tiny_model_dir, micro_batches: int, batch: dict, labels, sample_weight=None) -> list:
    """Trainable weights after one optimizer update on ``batch``, from the same start, without dropout."""
    import tensorflow as tf

    from tfbert.training import accumulate_gradients, classification_loss

    model = _model_without_dropout(tiny_model_dir)
    model.compile(optimizer=tf.keras.optimizers.SGD(0.5), loss=classification_loss, metrics=["accuracy"])
    accumulate_gradients(model, micro_batches)
    logs = model.train_on_batch(batch, labels, sample_weight=sample_weight, return_dict=True)
    return [v.numpy() for v in model.trainable_variables], logs


@pytest.mark.parametrize("micro_batches", [2, 3])
@pytest.mark.slow
def test_accumulated_update_equals_the_whole_batch_update(tiny_model_dir, micro_batches):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = ["good phone", "bad book and very poor", "okay", "love it really", "the worst item"]
    batch = dict(tokenizer(texts, padding=True, return_tensors="np"))
    labels = np.array([2, 0, 1, 2, 0])
    weights = np.array([1.0, 2.0, 0.5, 1.0, 3.0], np.float32)
    whole, whole_logs = _one_update(tiny_model_dir, 1, batch, labels, weights)
    split, split_logs = _one_update(tiny_model_dir, micro_batches, batch, labels, weights)
    start, _ = _one_update(tiny_model_dir, 1, batch, labels, np.zeros(5, np.float32))  # zero loss: no update
    assert max(np.abs(w - s).max() for w, s in zip(whole, start)) > 1e-3  # the update is not trivial
    for w, s in zip(whole, split):
        np.testing.assert_allclose(s, w, atol=1e-5)
    assert split_logs["loss"] == pytest.approx(whole_logs["loss"], rel=1e-5)
    assert split_logs["accuracy"] == pytest.approx(whole_logs["accuracy"])


def test_progress_lines_within_an_epoch_carry_step_rate_and_eta():
    import re

    import numpy as np
    import tensorflow as tf

    from tfbert.training import step_progress

    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.Input(shape=(4,)), tf.keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    lines = []
    data = tf.data.Dataset.from_tensor_slices((np.ones((40, 4), "float32"), np.zeros(40, "int64"))).batch(4)
    model.fit(data, epochs=2, verbose=0, callbacks=[step_progress(10, 4, every=3, write=lines.append)])
    pattern = re.compile(r"epoch (\d)/2 · step (\d+)/10 · ([\d.]+) examples/s · ETA (\d+):(\d\d)$")
    parsed = [pattern.match(line) for line in lines]
    assert all(parsed), lines
    assert [(int(m[1]), int(m[2])) for m in parsed] == [(e, s) for e in (1, 2) for s in (3, 6, 9, 10)]
    assert all(float(m[3]) > 0 for m in parsed)
    assert parsed[3].group(4, 5) == ("0", "00")  # the epoch's last step has nothing left


def test_progress_mode_follows_the_terminal_and_the_flags():
    from tfbert.config import TrainingConfig
    from tfbert.training import progress_interval, progress_mode

    assert progress_mode(TrainingConfig(), 300, terminal=True) == (1, 0)
    assert progress_mode(TrainingConfig(), 300, terminal=False) == (2, 20)
    assert progress_mode(TrainingConfig(log_every=7), 300, terminal=False) == (2, 7)
    assert progress_mode(TrainingConfig(quiet=True), 300, terminal=False) == (0, 0)
    assert progress_mode(TrainingConfig(json=True), 300, terminal=True) == (0, 0)
    assert progress_interval(3) == 1


def _fitted(tiny_model_dir, batch: dict, labels, micro_batches: int, trace_once: bool):
    """The model after fitting two batches with AdamW (no dropout), with or without trace_steps_once."""
    import tensorflow as tf

    from tfbert import tasks
    from tfbert.training import accumulate_gradients, make_optimizer, trace_steps_once

    model = _model_without_dropout(tiny_model_dir)
    model.compile(optimizer=make_optimizer(model, 1e-2, 0.01, 1, 4), loss=tasks.loss("single_label"),
                  metrics=tasks.keras_metrics("single_label"))
    accumulate_gradients(model, micro_batches)
    if trace_once:
        trace_steps_once(model)
    history = model.fit(tf.data.Dataset.from_tensor_slices((batch, labels)).batch(3), epochs=1, verbose=0)
    return model, history.history


@pytest.mark.parametrize("micro_batches", [1, 2])
@pytest.mark.slow
def test_steps_trace_once_without_autograph_and_train_as_before(tiny_model_dir, micro_batches):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = ["good phone", "bad book and very poor", "okay", "love it really", "the worst item", "fine"]
    batch = dict(tokenizer(texts, padding=True, return_tensors="np"))
    labels = np.array([2, 0, 1, 2, 0, 1])
    model, history = _fitted(tiny_model_dir, batch, labels, micro_batches, trace_once=True)
    keras_own, keras_history = _fitted(tiny_model_dir, batch, labels, micro_batches, trace_once=False)
    # One trace: AdamW's slots and the accuracy's variables existed before the first step.
    assert model.train_function.experimental_get_tracing_count() == 1
    assert model.predict(batch, verbose=0)["logits"].shape == (6, 3)
    assert model.predict_function.experimental_get_tracing_count() == 1
    for ours, theirs in zip(model.trainable_variables, keras_own.trainable_variables):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-6)
    assert history["loss"] == pytest.approx(keras_history["loss"], rel=1e-6)
    assert history["accuracy"] == pytest.approx(keras_history["accuracy"])


@pytest.mark.slow
def test_validation_warms_up_beside_the_steps_and_the_best_checkpoint_keeps_weights_only(tiny_model_dir, tmp_path):
    """fit runs the validation's warm-up once, in a thread started after the first step, and the first epoch's pass
    waits for it (the prediction function then traced once); the best epoch's checkpoint holds the weights without
    AdamW's moments, and fit ends on them."""
    import threading

    import datasets
    import tensorflow as tf

    from tfbert import modeling, training
    from tfbert.data.pipeline import tokenize, training_dataset
    from tfbert.evaluation import predict_probabilities

    tokenizer = modeling.load_tokenizer(tiny_model_dir)
    texts = ["good item", "bad phone and a very poor case", "great book", "awful product"] * 4
    split = datasets.Dataset.from_dict({"text": texts, "label": [0, 1, 0, 1] * 4})
    encoded = tokenize(datasets.DatasetDict({"train": split}), tokenizer, max_length=16)["train"]
    tf.keras.utils.set_random_seed(0)
    model = modeling.load_for_training(tiny_model_dir, ["pos", "neg"])
    model.compile(optimizer=training.make_optimizer(model, 3e-3, 0.01, 1, 8), loss=training.classification_loss)
    training.trace_steps_once(model)
    events, epoch_weights = [], []

    def warm_up():
        events.append(("warm-up", threading.current_thread() is threading.main_thread(),
                       model.train_function.experimental_get_tracing_count()))
        predict_probabilities(model, encoded.select(range(3)), tokenizer, batch_size=8)
        events.append(("warmed",))

    def evaluate():
        events.append(("pass",))
        predict_probabilities(model, encoded, tokenizer, batch_size=8)
        epoch_weights.append(model.get_weights())
        return {"loss": 1.0, "accuracy": 0.5, "macro_f1": (0.9, 0.5)[len(epoch_weights) - 1], "weighted_f1": 0.5}

    fitted = training.fit(model, training_dataset(encoded, tokenizer, batch_size=4, seed=0, repeat=True), epochs=2,
                          evaluate_validation=evaluate, run_dir=tmp_path, patience=0, n_train=len(encoded),
                          steps_per_epoch=4, verbose=0, warm_up_validation=warm_up)
    assert events == [("warm-up", False, 1), ("warmed",), ("pass",), ("pass",)]
    assert model.predict_function.experimental_get_tracing_count() == 1
    assert fitted.best_epoch == 1
    for now, best, last in zip(model.get_weights(), *epoch_weights):
        np.testing.assert_array_equal(now, best)
    assert any(not np.array_equal(best, last) for best, last in zip(*epoch_weights))
    names = [name for name, _ in tf.train.list_variables(str(tmp_path / "checkpoints" / "best"))]
    assert not [name for name in names if name.startswith("optimizer")]
    assert len(names) == len(model.weights) + 1  # and the object graph
