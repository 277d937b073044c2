"""The Keras 3 (keras-hub) classifier against transformers' TF classes, on tiny random checkpoints.

Each checkpoint is a transformers TF model saved as a Hub folder holds it: config.json and a PyTorch-layout
model.safetensors (what keras-hub's converters read), head included, so both sides hold the same weights.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import tfbert  # noqa: F401  (process setup before TensorFlow loads)
from tfbert.errors import TfbertError

LABELS = ["neg", "neu", "pos"]
FAMILIES = ("bert", "roberta", "xlm-roberta", "distilbert", "albert")
SIZES = dict(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
             max_position_embeddings=40, initializer_range=0.2)  # large weights: the approximate GELU would show


def tiny_transformers_classifier(family: str):
    """A random 2-layer transformers TF sequence classifier of ``family`` with 3 labels."""
    import tensorflow as tf
    from transformers import (AlbertConfig, BertConfig, DistilBertConfig, ElectraConfig, RobertaConfig,
                              TFAutoModelForSequenceClassification, XLMRobertaConfig)

    config = {
        "bert": lambda: BertConfig(**SIZES),
        "roberta": lambda: RobertaConfig(pad_token_id=1, **SIZES),
        "xlm-roberta": lambda: XLMRobertaConfig(pad_token_id=1, **SIZES),
        "albert": lambda: AlbertConfig(embedding_size=8, hidden_act="gelu", **SIZES),
        "electra": lambda: ElectraConfig(embedding_size=8, **SIZES),
        "distilbert": lambda: DistilBertConfig(vocab_size=40, dim=16, n_layers=2, n_heads=2, hidden_dim=32,
                                               max_position_embeddings=40, initializer_range=0.2),
    }[family]()
    config.num_labels = len(LABELS)
    tf.keras.utils.set_random_seed(0)
    model = TFAutoModelForSequenceClassification.from_config(config)
    model(model.dummy_inputs, training=False)
    return model


def write_hub_checkpoint(model, folder: Path) -> Path:
    """Save a transformers TF model as config.json + PyTorch-named model.safetensors (no PyTorch needed)."""
    from safetensors.numpy import save_file
    from transformers.modeling_tf_pytorch_utils import (TransposeType, apply_transpose,
                                                        convert_tf_weight_name_to_pt_weight_name)

    state = {}
    for weight in model.weights:
        name, transpose = convert_tf_weight_name_to_pt_weight_name(weight.name, tf_weight_shape=weight.shape)
        value = weight.numpy()
        if transpose is not TransposeType.NO:
            value = apply_transpose(transpose, value, pt_to_tf=False)
        state[name] = np.ascontiguousarray(value)
    folder.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(folder)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict:
    """family -> (checkpoint folder, the transformers TF model it was written from)."""
    root = tmp_path_factory.mktemp("hub_checkpoints")
    result = {}
    for family in FAMILIES:
        model = tiny_transformers_classifier(family)
        result[family] = (write_hub_checkpoint(model, root / family), model)
    return result


def sample_batch(with_segments: bool, rows: int = 4, length: int = 12, seed: int = 0) -> dict:
    """Ids in 3..39 with [CLS]-like 0/2 first, ragged lengths padded with 1 (RoBERTa's pad id), int64."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, 40, size=(rows, length))
    lengths = np.linspace(length, length // 2, rows).astype(int)
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int64)
    ids = np.where(mask == 1, ids, 1).astype(np.int64)
    batch = {"input_ids": ids, "attention_mask": mask}
    if with_segments:
        batch["token_type_ids"] = ((np.arange(length)[None, :] >= lengths[:, None] // 2) * mask).astype(np.int64)
    return batch


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_equal_transformers(checkpoints, family):
    from tfbert.keras_backend import build_classifier

    folder, reference = checkpoints[family]
    model = build_classifier(folder, LABELS)
    batch = sample_batch(with_segments=family in ("bert", "albert"))
    expected = reference(batch, training=False).logits.numpy()
    got = np.asarray(model(batch, training=False))
    print(f"{family}: max |logit diff| {np.abs(got - expected).max():.2e}")
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_exact_gelu_where_the_checkpoint_says_gelu(checkpoints):
    from keras_hub.layers import TransformerEncoder

    from tfbert.keras_backend import build_classifier

    model = build_classifier(checkpoints["bert"][0], LABELS)
    encoders = [layer for layer in model._flatten_layers() if isinstance(layer, TransformerEncoder)]
    assert len(encoders) == 2
    for encoder in encoders:
        value = float(encoder._feedforward_intermediate_dense.activation(np.float32(1.0)))
        assert value == pytest.approx(0.8413447, abs=1e-6)  # x * Phi(x) at 1; the tanh form gives 0.8411920


def test_training_fusions_keep_outputs_and_gradients(checkpoints):
    """fused_ops.fuse_keras3: GELU as the XLA kernel, dropout from 16-bit masks; same function, same gradients."""
    import keras
    import tensorflow as tf

    from tfbert.fused_ops import fuse_keras3
    from tfbert.keras_backend import build_classifier

    folder = checkpoints["bert"][0]
    batch = {key: tf.constant(value) for key, value in sample_batch(with_segments=True).items()}
    plain, fused = (build_classifier(folder, LABELS, dropout=0.0) for _ in range(2))
    dropouts = [layer for layer in fused._flatten_layers() if type(layer) is keras.layers.Dropout]
    assert fuse_keras3(fused) == {"gelu": 2, "dropout": len(dropouts)} and len(dropouts) >= 5
    assert fuse_keras3(fused) == {"gelu": 0, "dropout": 0}  # idempotent

    def logits_and_gradients(model):
        with tf.GradientTape() as tape:
            logits = model(batch, training=True)
            loss = tf.reduce_sum(tf.square(logits))
        return logits.numpy(), [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, model.trainable_weights)]

    (expected, expected_grads), (got, got_grads) = logits_and_gradients(plain), logits_and_gradients(fused)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    for g, e in zip(got_grads, expected_grads):
        np.testing.assert_allclose(g, e, atol=1e-4, rtol=1e-4)

    with_dropout = build_classifier(folder, LABELS, dropout=0.25)
    fuse_keras3(with_dropout)
    layer = next(layer for layer in with_dropout._flatten_layers() if isinstance(layer, keras.layers.Dropout))
    ones = tf.ones([200, 100])
    first, second = np.asarray(layer(ones, training=True)), np.asarray(layer(ones, training=True))
    assert set(np.unique(first)) == {0.0, np.float32(1 / 0.75)}
    assert abs((first == 0).mean() - 0.25) < 0.01 and not np.array_equal(first, second)  # a fresh mask per call
    np.testing.assert_array_equal(np.asarray(layer(ones, training=False)), ones.numpy())


def test_supports(checkpoints, tmp_path):
    from tfbert.keras_backend import supports

    for family in FAMILIES:
        assert supports(checkpoints[family][0]) is None
    for model_type in ("electra", "deberta-v2", "modernbert"):
        folder = tmp_path / model_type
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
        assert supports(folder) == f"{model_type}: no keras-hub converter"
    assert supports(tmp_path / "missing") is not None


def test_hub_ids_go_through_keras_hubs_loader():
    from tfbert.keras_checkpoint import checkpoint_preset

    assert checkpoint_preset("FacebookAI/roberta-base") == "hf://FacebookAI/roberta-base"
    assert checkpoint_preset("hf://google-bert/bert-base-uncased") == "hf://google-bert/bert-base-uncased"
    with pytest.raises(TfbertError, match="no such folder"):
        checkpoint_preset("./no/such/folder")


def test_build_refuses_unsupported_family(tmp_path):
    from tfbert.keras_backend import build_classifier

    folder = write_hub_checkpoint(tiny_transformers_classifier("electra"), tmp_path / "electra")
    with pytest.raises(TfbertError, match="electra: no keras-hub converter"):
        build_classifier(folder, LABELS)


def test_inputs_are_tfbert_batches(checkpoints):
    from tfbert.keras_backend import build_classifier

    bert = build_classifier(checkpoints["bert"][0], LABELS)
    roberta = build_classifier(checkpoints["roberta"][0], LABELS)
    assert sorted(bert.input) == ["attention_mask", "input_ids", "token_type_ids"]
    assert sorted(roberta.input) == ["attention_mask", "input_ids"]
    assert bert.output_shape == (None, 3)


def test_freeze_and_mlp_head(checkpoints):
    from tfbert.keras_backend import build_classifier

    model = build_classifier(checkpoints["bert"][0], LABELS, freeze_encoder=True, head_hidden_size=8)
    trainable = sorted(variable.path for variable in model.trainable_variables)
    assert trainable == ["classifier/bias", "classifier/kernel", "head_hidden/bias", "head_hidden/kernel"]


def test_checkpoint_head_reused_only_when_it_fits(checkpoints):
    from tfbert.keras_backend import build_classifier

    folder, reference = checkpoints["distilbert"]
    same = build_classifier(folder, LABELS)
    np.testing.assert_array_equal(np.array(same.get_layer("classifier").kernel), reference.classifier.kernel.numpy())
    other = build_classifier(folder, ["no", "yes"])  # 2 labels against the checkpoint's 3: a fresh head
    assert tuple(other.get_layer("classifier").kernel.shape) == (16, 2)


def test_dropout_override_reaches_backbone_and_head(checkpoints):
    import keras

    from tfbert.keras_backend import build_classifier

    model = build_classifier(checkpoints["roberta"][0], LABELS, dropout=0.25)
    rates = {layer.rate for layer in model._flatten_layers() if isinstance(layer, keras.layers.Dropout)}
    assert rates == {0.25}


def toy_dataset(with_segments: bool, rows: int = 48, batch_size: int = 8):
    """int64 dict batches whose label is given away by a token (5, 6 or 7) somewhere in the text."""
    import tensorflow as tf

    batch = sample_batch(with_segments, rows=rows, length=10, seed=1)
    labels = np.arange(rows) % 3
    batch["input_ids"][:, 3] = 5 + labels
    return tf.data.Dataset.from_tensor_slices((batch, labels.astype(np.int64))).batch(batch_size)


def compile_for_training(model, steps: int, lr: float = 3e-3):
    import keras

    from tfbert.keras_optimizer import make_optimizer

    model.compile(optimizer=make_optimizer(model, lr, 0.01, warmup_steps=2, total_steps=steps),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))


def test_fit_lowers_the_loss(checkpoints):
    from tfbert.keras_backend import build_classifier

    model = build_classifier(checkpoints["bert"][0], LABELS, dropout=0.0)
    data = toy_dataset(with_segments=True)
    compile_for_training(model, steps=6 * 8)
    losses = model.fit(data, epochs=8, shuffle=False, verbose=0).history["loss"]
    assert losses[-1] < 0.7 * losses[0], losses


MIRRORED_SCRIPT = textwrap.dedent("""
    import sys
    import tfbert
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, sys.argv[2])
    from test_keras_backend import LABELS, compile_for_training, toy_dataset
    from tfbert.keras_backend import build_classifier
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = build_classifier(sys.argv[1], LABELS)
        compile_for_training(model, steps=2)
    history = model.fit(toy_dataset(with_segments=True, rows=16), epochs=1, steps_per_epoch=1, verbose=0)
    print("replicas", strategy.num_replicas_in_sync, "loss", history.history["loss"][0])
""")


def test_fit_under_mirrored_strategy_with_int_masks(checkpoints):
    # Logical devices must be configured before TensorFlow initialises them: a fresh process.
    result = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT, str(checkpoints["bert"][0]),
                             str(Path(__file__).parent)], capture_output=True, text=True, timeout=300,
                            cwd=Path(__file__).parents[1])
    assert result.returncode == 0, result.stderr[-3000:]
    words = result.stdout.split()
    assert words[words.index("replicas") + 1] == "2"
    assert np.isfinite(float(words[words.index("loss") + 1]))


def test_save_and_load_give_identical_logits(checkpoints, tmp_path):
    from tfbert.keras_backend import build_classifier, load, save, settings_of

    for family, head_hidden_size in (("roberta", 0), ("bert", 8)):
        model = build_classifier(checkpoints[family][0], LABELS, head_hidden_size=head_hidden_size)
        batch = sample_batch(with_segments=family == "bert")
        folder = save(model, tmp_path / family)
        reloaded = load(folder)
        assert settings_of(reloaded) == settings_of(model)
        np.testing.assert_array_equal(np.asarray(reloaded(batch)), np.asarray(model(batch)))


def test_load_refuses_a_folder_without_weights(tmp_path):
    from tfbert.keras_backend import load

    with pytest.raises(TfbertError, match="not a Keras 3 classifier folder"):
        load(tmp_path)


def test_schedule_matches_the_keras2_formula():
    from tfbert.keras_optimizer import linear_warmup_decay
    from tfbert.training import learning_rate_at

    schedule = linear_warmup_decay(5e-5, warmup_steps=10, total_steps=100)
    for step in (0, 1, 5, 10, 11, 50, 99, 100, 130):
        assert float(schedule(step)) == pytest.approx(learning_rate_at(step, 5e-5, 10, 100), rel=1e-6, abs=1e-12)


def test_weight_decay_spares_layer_norm_and_bias(checkpoints):
    import keras

    from tfbert.keras_backend import build_classifier
    from tfbert.keras_optimizer import decay_exempt_variables, make_optimizer
    from tfbert.training import excluded_from_decay

    model = build_classifier(checkpoints["bert"][0], LABELS)
    exempt = decay_exempt_variables(model)
    # Per layer: 6 biases (query, key, value, attention output, intermediate, output) and 2 LayerNorms of 2;
    # then the embeddings' LayerNorm (2), the pooler's bias and the classifier's bias.
    assert len(exempt) == 2 * (6 + 4) + 2 + 1 + 1 == 24
    assert len(exempt) == len(excluded_from_decay(checkpoints["bert"][1].trainable_variables))
    # One step with zero gradients: Adam's update is 0, so only decay moves a variable.
    optimizer = make_optimizer(model, lr=0.1, weight_decay=0.5, warmup_steps=0, total_steps=10)
    before = [np.array(variable) for variable in model.trainable_variables]
    optimizer.apply_gradients([(keras.ops.zeros_like(v), v) for v in model.trainable_variables])
    exempt_ids = {id(variable) for variable in exempt}
    for variable, old in zip(model.trainable_variables, before):
        moved = not np.array_equal(np.array(variable), old)
        assert moved == (id(variable) not in exempt_ids and np.any(old != 0)), variable.path
