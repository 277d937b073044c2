"""Reproducibility: the same command gives the same metrics and weights; the same seed, the same data order."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
from conftest import make_rows, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
# Two epochs: the second reshuffles the data, and the best-epoch checkpoint is restored before saving.
TRAINING = ["--epochs", "2", "--batch_size", "8", "--lr", "3e-3", "--max_length", "32", "--patience", "0",
            "--top_errors", "3", "--quiet", "--deterministic"]
# metrics.json fields that measure the machine, not the model.
MEASURED_FIELDS = ("seconds", "per_second", "rss")


def _start_training(work: Path, model_dir: Path, precision: str) -> subprocess.Popen:
    work.mkdir(parents=True)
    write_jsonl(work / "reviews.jsonl", make_rows(60))
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), "--train_file", "reviews.jsonl",
                             "--model_name", str(model_dir), "--precision", precision, *TRAINING],
                            cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finished_run(process: subprocess.Popen, work: Path) -> Path:
    _, stderr = process.communicate(timeout=900)
    assert process.returncode == 0, stderr[-3000:]
    (run,) = (work / "output" / "reviews").glob("*/*")
    return run


def _model_values(metrics: dict) -> dict:
    """``metrics`` without the timing, speed and memory fields, which differ from run to run."""
    return {key: _model_values(value) if isinstance(value, dict) else value for key, value in metrics.items()
            if not any(field in key for field in MEASURED_FIELDS)}


def _h5_arrays(path: Path) -> dict[str, np.ndarray]:
    import h5py

    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, item: arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None)
    return arrays


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_deterministic_runs_give_identical_metrics_and_weights(tiny_model_dir, tmp_path, precision):
    # Started together: the second run also meets the first one's CPU load and its tokenisation cache writes.
    works = [tmp_path / "first", tmp_path / "second"]
    processes = [_start_training(work, tiny_model_dir, precision) for work in works]
    first, second = (_finished_run(process, work) for process, work in zip(processes, works))

    metrics = [json.loads((run / "metrics.json").read_text()) for run in (first, second)]
    assert metrics[0]["train_seconds"] > 0 and "validation" in metrics[0]  # the filter below keeps the metrics
    assert _model_values(metrics[0]) == _model_values(metrics[1])
    assert (first / "log.csv").read_text() == (second / "log.csv").read_text()  # every epoch, not only the best
    weights = [_h5_arrays(run / "model" / "tf_model.h5") for run in (first, second)]
    assert weights[0].keys() == weights[1].keys() and len(weights[0]) > 10
    different = [name for name in weights[0] if not np.array_equal(weights[0][name], weights[1][name])]
    assert not different


def _label_order(encoded: datasets.Dataset, tokenizer, seed: int, batches: int) -> list[int]:
    from tfbert.data.pipeline import training_dataset

    dataset = training_dataset(encoded, tokenizer, batch_size=8, seed=seed, repeat=True)
    return [label for _, labels in dataset.take(batches) for label in labels.numpy().tolist()]


def test_the_seed_alone_fixes_the_data_order(tiny_model_dir):
    """Without --deterministic too: the shuffle takes its seed from --seed, not from the random state."""
    import tensorflow as tf
    from transformers import AutoTokenizer

    from tfbert.data.pipeline import tokenize

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = make_rows(64)
    split = datasets.Dataset.from_dict({"text": [r["text"] for r in rows], "label": list(range(len(rows)))})
    encoded = tokenize(datasets.DatasetDict({"train": split}), tokenizer, max_length=32)["train"]
    batches = 20  # two passes and a half: the reshuffled passes must repeat too
    order = _label_order(encoded, tokenizer, seed=7, batches=batches)
    tf.random.uniform([3])  # random numbers drawn in between (a model built, dropout run) change nothing
    np.random.default_rng().random()
    assert _label_order(encoded, tokenizer, seed=7, batches=batches) == order
    assert _label_order(encoded, tokenizer, seed=8, batches=batches) != order
