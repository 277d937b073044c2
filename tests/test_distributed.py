"""The multi-device path (MirroredStrategy) on two logical CPUs, with mixed precision, in a fresh process."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # trains in a fresh subprocess

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import tfbert
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import datasets
    from pathlib import Path
    from tfbert import modeling, runtime, training
    from tfbert.data.pipeline import tokenize, training_dataset
    from tfbert.evaluation import predict_probabilities

    folder, policy, run_dir = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    runtime.set_precision(policy)
    strategy = runtime.strategy_for([d.name for d in tf.config.list_logical_devices("CPU")])
    tokenizer = modeling.load_tokenizer(folder)
    texts = ["good item", "bad phone", "great book", "awful product"] * 8
    data = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": texts, "label": [0, 1, 0, 1] * 8})})
    encoded = tokenize(data, tokenizer, max_length=16)["train"]
    with strategy.scope():
        model = modeling.load_for_training(folder, ["pos", "neg"])
        model.compile(optimizer=training.make_optimizer(model, 3e-3, 0.01, 1, 8),
                      loss=training.classification_loss, metrics=["accuracy"])
    result = training.fit(
        model, training_dataset(encoded, tokenizer, batch_size=8, seed=0, repeat=True), epochs=2,
        evaluate_validation=lambda: {"loss": 1.0, "accuracy": 0.5, "macro_f1": 0.5, "weighted_f1": 0.5},
        run_dir=run_dir, patience=0, n_train=len(encoded), steps_per_epoch=len(encoded) // 8, verbose=0,
        warm_up_validation=lambda: predict_probabilities(model, encoded.select(range(8)), tokenizer, batch_size=8))
    probabilities = predict_probabilities(model, encoded, tokenizer, batch_size=8)
    print(json.dumps({
        "strategy": type(strategy).__name__, "replicas": strategy.num_replicas_in_sync,
        "compute_dtype": model.layers[0].compute_dtype, "variable_dtype": model.layers[0].variable_dtype,
        "losses": result.history["loss"], "probability_dtype": str(probabilities.dtype),
        "row_sums": probabilities.sum(axis=1).tolist(),
        "loss_scaled": isinstance(model.optimizer, tf.keras.mixed_precision.LossScaleOptimizer),
    }))
    """
)


def run(tiny_model_dir, tmp_path, policy):
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tiny_model_dir), policy, str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_mirrored_strategy_on_two_logical_cpus_with_bfloat16(tiny_model_dir, tmp_path):
    report = run(tiny_model_dir, tmp_path, "mixed_bfloat16")
    assert report["strategy"] == "MirroredStrategy" and report["replicas"] == 2
    assert report["compute_dtype"] == "bfloat16" and report["variable_dtype"] == "float32"
    assert report["loss_scaled"] is False  # bfloat16 has float32's range: no loss scaling needed
    assert all(0 < loss < 10 for loss in report["losses"])
    assert report["probability_dtype"] == "float32"
    assert all(abs(total - 1) < 1e-5 for total in report["row_sums"])
    assert (tmp_path / "log.csv").is_file() and (tmp_path / "checkpoints" / "best.index").is_file()


def test_mixed_float16_uses_loss_scaling(tiny_model_dir, tmp_path):
    report = run(tiny_model_dir, tmp_path, "mixed_float16")
    assert report["compute_dtype"] == "float16" and report["loss_scaled"] is True
    assert all(0 < loss < 10 for loss in report["losses"])
