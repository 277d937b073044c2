"""Training with the Keras 3 backend: backend choice, a run end to end, the best epoch, accumulation, replicas.

The checkpoint is conftest's tiny BERT vocabulary in a Hub-style folder (config.json, PyTorch-named
model.safetensors, tokenizer files), which both backends read.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import VOCAB, make_rows, write_jsonl
from test_keras_backend import tiny_transformers_classifier, write_hub_checkpoint

from tfbert import backends
from tfbert.config import parse_train_args
from tfbert.errors import TfbertError

ROOT = Path(__file__).resolve().parent.parent
LABELS = ["neg", "neu", "pos"]
TINY = ["--batch_size", "16", "--max_length", "32", "--precision", "float32", "--patience", "0", "--lr", "3e-3",
        "--cache_dir", "off", "--top_errors", "5"]


def write_safetensors_bert(folder: Path) -> Path:
    """A random 2-layer BERT classifier over conftest's vocabulary, as a Hub folder with safetensors weights."""
    import tensorflow as tf
    from transformers import BertConfig, BertTokenizerFast, TFBertForSequenceClassification

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, initializer_range=0.2)
    tf.keras.utils.set_random_seed(0)
    model = TFBertForSequenceClassification(config)
    model(model.dummy_inputs)
    return write_hub_checkpoint(model, folder)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> Path:
    return write_safetensors_bert(tmp_path_factory.mktemp("keras_bert"))


def _config(tmp_path, model_dir, *args):
    return parse_train_args(["--model_name", str(model_dir), *TINY, "--output_dir", str(tmp_path / "output"),
                             "--plots_dir", str(tmp_path / "plots"), *args])


# --- which backend --------------------------------------------------------------------------------------------------

def test_backend_resolution(bert_dir, tiny_model_dir, tmp_path):
    electra = write_hub_checkpoint(tiny_transformers_classifier("electra"), tmp_path / "electra")
    assert backends.resolve("keras", bert_dir) == backends.Backend("keras", "--backend keras")
    assert backends.resolve("transformers", electra) == backends.Backend("transformers", "--backend transformers")
    auto = backends.resolve("auto", bert_dir)
    assert auto.name == ("keras" if backends.AUTO_PREFERS_KERAS else "transformers")
    assert auto.reason.startswith("auto: keras-hub covers this family")
    assert backends.resolve("auto", electra).reason == "auto: keras-hub cannot build it (electra: no keras-hub converter)"
    with pytest.raises(TfbertError, match=r"^--backend keras: .*\(electra: no keras-hub converter\); use --backend "
                                          r"transformers") as refused:
        backends.resolve("keras", electra)
    assert "\n" not in str(refused.value)
    # conftest's tiny model has TensorFlow weights only, which keras-hub cannot read
    with pytest.raises(TfbertError, match="no model.safetensors"):
        backends.resolve("keras", tiny_model_dir)
    assert backends.resolve("auto", tiny_model_dir).name == "transformers"


def test_auto_follows_the_benchmark_switch(bert_dir, monkeypatch):
    monkeypatch.setattr(backends, "AUTO_PREFERS_KERAS", True)
    assert backends.resolve("auto", bert_dir).name == "keras"
    monkeypatch.setattr(backends, "AUTO_PREFERS_KERAS", False)
    assert backends.resolve("auto", bert_dir).name == "transformers"


@pytest.mark.parametrize("args, message", [
    (["--backend", "keras", "--resume", "auto"], "--resume works with --backend transformers only"),
    (["--backend", "keras", "--save_every", "5"], "--save_every works with --backend transformers only"),
    (["--keras_backend", "jax"], "--keras_backend jax needs --backend keras"),
    (["--backend", "keras", "--keras_backend", "jax", "--export_tflite"], "--export_tflite needs --keras_backend "
     "tensorflow"),
])
def test_flags_the_keras_backend_cannot_honour_are_refused(args, message):
    with pytest.raises(TfbertError, match=message):
        parse_train_args(args)


def test_jax_without_jax_says_how_to_install_it():
    import importlib.util

    if importlib.util.find_spec("jax") is not None:
        pytest.skip("JAX is installed here")
    with pytest.raises(TfbertError, match=r"JAX is not installed \(pip install jax\)"):
        parse_train_args(["--backend", "keras", "--keras_backend", "jax"])


def test_a_refused_family_writes_no_run(tmp_path):
    from tfbert.experiment import train

    electra = write_hub_checkpoint(tiny_transformers_classifier("electra"), tmp_path / "electra")
    data = write_jsonl(tmp_path / "reviews.jsonl", make_rows(60))
    config = _config(tmp_path, electra, "--train_file", str(data), "--backend", "keras", "--epochs", "1")
    with pytest.raises(TfbertError, match="--backend keras: .*electra"):
        train(config, report=lambda line: None)
    assert not (tmp_path / "output").exists()


# --- a run end to end -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def keras_run(bert_dir, tmp_path_factory):
    """One Keras 3 run through experiment.train, checkpoints kept; the tests below read its folder."""
    from tfbert.experiment import train

    work = tmp_path_factory.mktemp("keras_run")
    rows = make_rows(150)
    data = write_jsonl(work / "reviews.jsonl", rows)
    config = _config(work, bert_dir, "--train_file", str(data), "--backend", "keras", "--epochs", "4",
                     "--keep_checkpoints", "--quiet", "--export_tflite")
    summary = train(config, report=lambda line: None)
    return {"run": Path(summary["run_dir"]), "summary": summary, "rows": rows, "work": work}


@pytest.mark.slow  # a Keras 3 fit: tens of seconds
def test_run_folder_is_the_same_shape(keras_run):
    run = keras_run["run"]
    for name in ("config.json", "log.csv", "metrics.json", "classification_report.txt", "errors.jsonl", "report.md",
                 "report.html", "splits.json", "status.json", "predictions_test.jsonl", "predictions_validation.jsonl",
                 "model/config.json", "model/keras_classifier.json", "model/model.weights.h5", "model/tokenizer.json",
                 "model/vocab.txt", "model/tfbert.json", "checkpoints/best.weights.h5", "saved_model/1/saved_model.pb"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").rglob("events.out.tfevents.*"))
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    assert json.loads((run / "model" / "tfbert.json").read_text())["backend"] == "keras"
    import h5py

    with h5py.File(run / "model" / "model.weights.h5") as weights:  # weights only; the checkpoint keeps AdamW's
        assert "optimizer" not in weights
    with h5py.File(run / "checkpoints" / "best.weights.h5") as checkpoint:
        assert "optimizer" in checkpoint
    plots = keras_run["work"] / "plots" / run.relative_to(keras_run["work"] / "output")
    for name in ("loss.png", "metrics.png", "confusion_matrix_test.png", "lengths.png"):
        assert (plots / name).stat().st_size > 5000, name


@pytest.mark.slow  # a Keras 3 fit: tens of seconds
def test_config_records_the_backend_and_why(keras_run):
    config = json.loads((keras_run["run"] / "config.json").read_text())
    assert config["settings"]["model"]["backend"] == "keras"
    assert config["resolved"]["backend"] == "keras"
    assert config["resolved"]["backend_reason"] == "--backend keras"
    assert config["resolved"]["fused_ops"] is True  # --fused_ops auto on a CPU: fused_ops.fuse_keras3


@pytest.mark.slow  # a Keras 3 fit: tens of seconds
def test_log_has_one_row_per_epoch_with_the_transformers_columns(keras_run):
    with open(keras_run["run"] / "log.csv") as f:
        log = list(csv.DictReader(f))
    assert [row["epoch"] for row in log] == ["0", "1", "2", "3"]
    assert list(log[0]) == ["epoch", "accuracy", "loss", "val_accuracy", "val_loss", "val_macro_f1", "val_weighted_f1"]
    losses = [float(row["loss"]) for row in log]
    assert losses[-1] < losses[0]


@pytest.mark.slow  # a Keras 3 fit: tens of seconds
def test_metrics_match_a_recomputation_from_predictions(keras_run):
    from sklearn.metrics import accuracy_score, f1_score

    run, rows = keras_run["run"], keras_run["rows"]
    metrics = json.loads((run / "metrics.json").read_text())
    for split in ("validation", "test"):
        predictions = [json.loads(line) for line in (run / f"predictions_{split}.jsonl").read_text().splitlines()]
        gold = [rows[p["row_id"]]["label"] for p in predictions]
        assert gold == [p["label"] for p in predictions]
        predicted = [p["predicted"] for p in predictions]
        assert metrics[split]["accuracy"] == pytest.approx(accuracy_score(gold, predicted))
        assert metrics[split]["macro_f1"] == pytest.approx(f1_score(gold, predicted, average="macro"))
    assert metrics["parameters"] > 0 and metrics["train_examples_per_second"] > 0
    compact = metrics["compact"]
    assert (run / compact["path"]).is_file(), compact
    assert compact["encoder_layers"] + len(compact["left_out_layers"]) == 2
    assert compact["test_macro_f1_change"] == pytest.approx(compact["test_macro_f1"] - metrics["test"]["macro_f1"],
                                                            abs=1e-4)


@pytest.mark.slow  # a Keras 3 fit: tens of seconds
def test_the_best_epoch_is_restored_and_saved(keras_run):
    from tfbert.evaluation import split_metrics
    from tfbert.keras_backend import load

    run = keras_run["run"]
    metrics = json.loads((run / "metrics.json").read_text())
    with open(run / "log.csv") as f:
        scores = [float(row["val_macro_f1"]) for row in csv.DictReader(f)]
    assert metrics["best_epoch"] == int(np.argmax(scores)) + 1 == keras_run["summary"]["best_epoch"]
    assert metrics["validation"]["macro_f1"] == pytest.approx(max(scores), abs=1e-6)
    saved, best = load(run / "model"), load(run / "model")
    best.load_weights(str(run / "checkpoints" / "best.weights.h5"))
    for a, b in zip(saved.weights, best.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The saved model scores the validation split as the best epoch did.
    from tfbert.data.corpus import load_corpus
    from tfbert.data.pipeline import tokenize
    from tfbert.modeling import load_tokenizer
    from tfbert.resume import saved_config

    config = saved_config(run)
    corpus = load_corpus(config.data, seed=config.training.seed)
    tokenizer = load_tokenizer(run / "model")
    encoded = tokenize(corpus.splits, tokenizer, config.data.max_length, config.data.truncation, None)
    again = split_metrics(saved, encoded["validation"], tokenizer, LABELS)
    assert again["macro_f1"] == pytest.approx(max(scores), abs=1e-6)


@pytest.mark.slow
def test_the_saved_model_and_infer_answer_as_the_run_did(keras_run):
    from tfbert.predictors import SavedModelPredictor, load_predictor

    run, rows = keras_run["run"], keras_run["rows"]
    predictions = [json.loads(line) for line in (run / "predictions_test.jsonl").read_text().splitlines()]
    texts = [rows[p["row_id"]]["text"] for p in predictions]
    expected = [p["probabilities"] for p in predictions]
    np.testing.assert_allclose(SavedModelPredictor(run / "saved_model").predict(texts), expected, atol=1e-5)
    np.testing.assert_allclose(load_predictor(str(run)).predict(texts), expected, atol=1e-5)  # infer.py's


# --- the optimizer's accumulation, and replicas ----------------------------------------------------------------

def _batch(rows: int, seed: int):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, len(VOCAB), size=(rows, 10)).astype(np.int64)
    ids[:, 0] = 2
    mask = np.ones_like(ids)
    mask[rows // 2:, 7:] = 0
    features = {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    return features, (np.arange(rows) % 3).astype(np.int64)


@pytest.mark.slow  # a Keras 3 fit: tens of seconds
def test_accumulated_update_equals_the_big_batch_update(bert_dir):
    import tensorflow as tf

    from tfbert.keras_training import compiled_model

    def model(accumulation: int):
        return compiled_model(bert_dir, LABELS, strategy=tf.distribute.get_strategy(), lr=1e-3, weight_decay=0.01,
                              warmup_steps=0, total_updates=10, accumulation_steps=accumulation, dropout=0.0)

    whole, parts = model(1), model(2)
    parts.set_weights(whole.get_weights())  # the same fresh head
    start = [np.asarray(w).copy() for w in whole.weights]
    features, labels = _batch(8, seed=3)
    whole.train_on_batch(features, labels)
    for half in (slice(0, 4), slice(4, 8)):
        parts.train_on_batch({k: v[half] for k, v in features.items()}, labels[half])
    assert int(parts.optimizer.iterations) == int(whole.optimizer.iterations) == 1
    moved = 0
    for a, b, s in zip(whole.trainable_weights, parts.trainable_weights, start):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=2e-6, rtol=0)
        moved += not np.allclose(np.asarray(a), s)
    assert moved > 10  # the update did happen, on most variables


MIRRORED_SCRIPT = textwrap.dedent("""
    import sys
    import tfbert
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, sys.argv[2])
    import keras
    from test_keras_training import LABELS, _batch
    from tfbert.keras_training import compiled_model

    def trained(strategy):
        model = compiled_model(sys.argv[1], LABELS, strategy=strategy, lr=1e-3, weight_decay=0.0, warmup_steps=0,
                               total_updates=10, dropout=0.0)
        with strategy.scope():  # SGD: AdamW turns the replicas' rounding noise into whole steps
            model.compile(optimizer=keras.optimizers.SGD(0.5), loss=model.loss, metrics=["accuracy"])
        keras.utils.set_random_seed(0)
        model.set_weights(initial)
        features, labels = _batch(8, seed=5)
        data = tf.data.Dataset.from_tensor_slices((features, labels)).batch(8)
        history = model.fit(data, epochs=2, verbose=0)
        return model, history.history["loss"]

    keras.utils.set_random_seed(0)
    initial = compiled_model(sys.argv[1], LABELS, strategy=tf.distribute.get_strategy(), lr=1e-3, weight_decay=0.0,
                             warmup_steps=0, total_updates=10, dropout=0.0).get_weights()
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    one, one_loss = trained(tf.distribute.get_strategy())
    two, two_loss = trained(mirrored)
    diff = max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in zip(one.weights, two.weights))
    moved = max(float(np.abs(np.asarray(a) - b).max()) for a, b in zip(one.weights, initial))
    print("replicas", mirrored.num_replicas_in_sync, "diff", diff, "moved", moved, "losses", *one_loss, *two_loss)
""")


@pytest.mark.slow  # a Keras 3 fit: tens of seconds
def test_mirrored_over_two_cpus_equals_one_replica(bert_dir):
    # Logical devices must be configured before TensorFlow initialises them: a fresh process.
    result = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT, str(bert_dir), str(Path(__file__).parent)],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    words = result.stdout.split()
    assert words[words.index("replicas") + 1] == "2"
    assert float(words[words.index("moved") + 1]) > 1e-3
    assert float(words[words.index("diff") + 1]) < 1e-5
    losses = [float(w) for w in words[words.index("losses") + 1:]]
    np.testing.assert_allclose(losses[:2], losses[2:], atol=1e-5)


# --- the command line ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_train_py_with_backend_keras(bert_dir, tmp_path):
    """The flags the Keras 3 path honours, together: accumulation, class weights, a frozen encoder with an MLP
    head, bfloat16 mixed precision."""
    write_jsonl(tmp_path / "reviews.jsonl", make_rows(90))
    completed = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--train_file", "reviews.jsonl", "--model_name", str(bert_dir),
         "--backend", "keras", *TINY, "--epochs", "2", "--grad_accum_steps", "2", "--class_weight", "balanced",
         "--freeze_encoder", "--head_hidden_size", "8", "--precision", "bfloat16", "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = json.loads(completed.stdout.splitlines()[-1])
    run = Path(tmp_path / summary["run_dir"])
    resolved = json.loads((run / "config.json").read_text())["resolved"]
    assert (resolved["backend"], resolved["precision_policy"]) == ("keras", "mixed_bfloat16")
    with open(run / "log.csv") as f:
        assert len(list(csv.DictReader(f))) == 2
    assert (run / "model" / "model.weights.h5").is_file() and not (run / "checkpoints").exists()
    head = json.loads((run / "model" / "keras_classifier.json").read_text())
    assert (head["freeze_encoder"], head["head_hidden_size"]) == (True, 8)
    assert json.loads((run / "model" / "tfbert.json").read_text())["head_hidden_size"] == 8
    # Frozen: the encoder's weights are the checkpoint's, bit for bit; the head's are new.
    from tfbert.keras_backend import build_classifier, load

    trained, start = load(run / "model"), build_classifier(bert_dir, LABELS, freeze_encoder=True, head_hidden_size=8)
    def backbone(model):
        return max(model.layers, key=lambda layer: len(layer.weights))

    assert len(backbone(trained).weights) > 20
    for a, b in zip(backbone(trained).weights, backbone(start).weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(trained.get_layer("head_hidden").kernel),
                              np.asarray(start.get_layer("head_hidden").kernel))


@pytest.mark.slow
def test_train_py_refuses_an_uncovered_family_in_one_line(tmp_path):
    electra = write_hub_checkpoint(tiny_transformers_classifier("electra"), tmp_path / "electra")
    write_jsonl(tmp_path / "reviews.jsonl", make_rows(60))
    completed = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--train_file", "reviews.jsonl", "--model_name", str(electra),
         "--backend", "keras", *TINY], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 2
    message = [line for line in completed.stderr.splitlines() if "--backend keras" in line]
    assert len(message) == 1 and "electra: no keras-hub converter" in message[0] and "Traceback" not in completed.stderr


@pytest.mark.slow
def test_bench_passes_the_backend_through(bert_dir, tmp_path):
    rows = make_rows(120)
    write_jsonl(tmp_path / "train.jsonl", rows[:90])
    write_jsonl(tmp_path / "test.jsonl", rows[90:])
    completed = subprocess.run(
        [sys.executable, "-m", "tfbert.bench", "--train_file", "train.jsonl", "--test_file", "test.jsonl",
         "--model_name", str(bert_dir), "--backend", "keras", "--epochs", "1", "--lr", "3e-3", "--batch_size", "16",
         "--max_length", "32", "--precision", "float32", "--cache_dir", "off"],
        cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    run = Path(report["run_dir"])
    try:
        metrics = json.loads((run / "metrics.json").read_text())
        assert report["backend"] == "keras"
        assert report["test_macro_f1"] == pytest.approx(metrics["test"]["macro_f1"], abs=1e-4)
        assert report["saved_model_test_macro_f1"] == pytest.approx(report["test_macro_f1"], abs=1e-4)
        assert report["train_samples_per_s_after_first_step"] > 0
        assert report["compact_test_macro_f1"] == pytest.approx(metrics["compact"]["test_macro_f1"], abs=1e-4)
    finally:
        shutil.rmtree(run.parents[3], ignore_errors=True)  # the bench's own temporary folder


@pytest.mark.slow
def test_train_py_on_jax(bert_dir, tmp_path):
    """Keras 3 on JAX trains; the SavedModel, traced by Keras 3 on TensorFlow from the same weights, answers alike."""
    pytest.importorskip("jax")
    from tfbert.predictors import SavedModelPredictor

    rows = make_rows(90)
    write_jsonl(tmp_path / "reviews.jsonl", rows)
    completed = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--train_file", "reviews.jsonl", "--model_name", str(bert_dir),
         "--backend", "keras", "--keras_backend", "jax", *TINY, "--epochs", "1", "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stderr[-3000:]
    run = tmp_path / json.loads(completed.stdout.splitlines()[-1])["run_dir"]
    config = json.loads((run / "config.json").read_text())
    assert config["settings"]["model"]["keras_backend"] == "jax"
    assert config["resolved"]["compact_export"] is False and not (run / "compact").exists()  # auto: not on JAX
    predictions = [json.loads(line) for line in (run / "predictions_test.jsonl").read_text().splitlines()]
    probabilities = SavedModelPredictor(run / "saved_model").predict([rows[p["row_id"]]["text"] for p in predictions])
    np.testing.assert_allclose(probabilities, [p["probabilities"] for p in predictions], atol=1e-5)
