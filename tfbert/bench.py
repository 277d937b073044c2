"""A fixed benchmark workload; prints one JSON object.

    python -m tfbert.bench --train_file ../shared/data/splits/ag_news_train.jsonl \\
        --test_file ../shared/data/splits/ag_news_test.jsonl --epochs 2 --precision bfloat16

It trains with train.py's code path (same flags), then measures the exported SavedModel (text in):
predict samples/s at batch 32 (batched by length as infer.py does, and in the file's order as the
reference's Trainer.predict), single-text latency p50/p99 after warm-up, and a compact export
(TFLite, dynamic-range int8 weights): size, speed and macro-F1. Compare with
../shared/bench/reference_hf_trainer.py run on the same files in the same session.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import tfbert  # noqa: F401
from tfbert.errors import TfbertError


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _cpu_peak_gflops() -> float:
    """fp32 peak of this CPU from its clock and AVX-512 FMA width (2 FMA units x 16 lanes x 2 FLOPs)."""
    mhz = [float(line.split(":")[1]) for line in open("/proc/cpuinfo") if line.startswith("cpu MHz")]
    return os.cpu_count() * (max(mhz) if mhz else 2000.0) / 1000 * 64


def _tflite_export(model, max_length: int, path: Path) -> None:
    import tensorflow as tf

    spec = tf.TensorSpec([1, None], tf.int32)

    @tf.function(input_signature=[spec, spec, spec])
    def logits(input_ids, attention_mask, token_type_ids):
        return tf.cast(model({"input_ids": input_ids, "attention_mask": attention_mask,
                              "token_type_ids": token_type_ids}, training=False).logits, tf.float32)

    converter = tf.lite.TFLiteConverter.from_concrete_functions([logits.get_concrete_function()], model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]  # dynamic-range: int8 weights, float activations
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    path.write_bytes(converter.convert())


def _tflite_predict(path: Path, encoded: dict) -> tuple[np.ndarray, float]:
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=os.cpu_count())
    runner = interpreter.get_signature_runner()
    probabilities = []
    started = time.perf_counter()
    for i in range(len(encoded["input_ids"])):
        feeds = {key: np.asarray([encoded[key][i]], np.int32) for key in ("input_ids", "attention_mask", "token_type_ids")}
        out = runner(**feeds)
        logits = next(iter(out.values()))[0]
        exp = np.exp(logits - logits.max())
        probabilities.append(exp / exp.sum())
    return np.asarray(probabilities), time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    from tfbert.cli import setup_logging
    from tfbert.config import parse_train_args

    argv = list(sys.argv[1:] if argv is None else argv)
    workdir = Path(tempfile.mkdtemp(prefix="tfbert-bench-"))
    config = parse_train_args(argv + ["--quiet", "--output_dir", str(workdir / "output"),
                                      "--plots_dir", str(workdir / "plots"), "--patience", "0"])
    setup_logging(quiet=True)
    from tfbert.experiment import train

    summary = train(config, report=lambda line: None)
    run = Path(summary["run_dir"])
    metrics = json.loads((run / "metrics.json").read_text())
    resolved = json.loads((run / "config.json").read_text())["resolved"]
    peak_train_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    import datasets

    from tfbert import modeling
    from tfbert.data.corpus import load_corpus
    from tfbert.data.pipeline import encode_batch
    from tfbert.evaluation import evaluate_predictions
    from tfbert.export import SavedModelPredictor

    corpus = load_corpus(config.data, seed=config.training.seed)
    test_texts, test_labels = list(corpus.splits["test"]["text"]), np.asarray(corpus.splits["test"]["label"])
    predictor = SavedModelPredictor(run / "saved_model", batch_size=32)
    predictor.predict(test_texts[:64])  # warm-up: trace the shapes
    started = time.perf_counter()
    saved_probabilities = predictor.predict(test_texts)  # batched by length, as infer.py does
    predict_seconds = time.perf_counter() - started
    started = time.perf_counter()
    predictor.predict(test_texts, sort_by_length=False)  # batches in the file's order, as the reference
    input_order_seconds = time.perf_counter() - started
    latencies = []
    for text in test_texts[:20] + test_texts[:100]:
        started = time.perf_counter()
        predictor.predict([text])
        latencies.append(time.perf_counter() - started)
    latencies = sorted(latencies[20:])

    import tensorflow as tf

    tf.keras.mixed_precision.set_global_policy("float32")  # the compact export converts float32 weights
    model = modeling.load_classifier(run / "model")
    n_params = sum(int(np.prod(v.shape)) for v in model.weights if "embeddings" not in v.name)
    tokens_per_second = metrics["train_tokens_per_second_after_first_step"]
    report = {
        "run_dir": str(run),
        "precision_policy": metrics["precision_policy"],
        "n_train": corpus.sizes()["train"],
        "n_test": len(test_texts),
        "train_seconds": metrics["train_seconds"],
        "train_samples_per_s": metrics["train_examples_per_second"],
        "train_samples_per_s_after_first_step": metrics["train_examples_per_second_after_first_step"],
        "train_tokens_per_s_after_first_step": tokens_per_second,
        "model_flop_utilization_vs_fp32_avx512_peak": round(6 * n_params * tokens_per_second / (_cpu_peak_gflops() * 1e9), 4),
        "peak_rss_mib_training": round(peak_train_mib, 1),
        "validation_macro_f1": round(metrics["validation"]["macro_f1"], 4),
        "test_macro_f1": round(metrics["test"]["macro_f1"], 4),
        "test_accuracy": round(metrics["test"]["accuracy"], 4),
        "export_precision_policy": resolved["export_precision_policy"],
        "fused_ops": resolved["fused_ops"],
        "saved_model_predict_samples_per_s_batch32": round(len(test_texts) / predict_seconds, 1),
        "saved_model_predict_samples_per_s_batch32_input_order": round(len(test_texts) / input_order_seconds, 1),
        "saved_model_test_macro_f1": round(evaluate_predictions(saved_probabilities, test_labels,
                                                                corpus.label_names).metrics["macro_f1"], 4),
        "single_text_latency_ms_p50": round(1000 * statistics.median(latencies), 2),
        "single_text_latency_ms_p99": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 2),
        "saved_model_mib": round(_dir_size(predictor.path) / 2**20, 1),
    }
    try:
        tflite = workdir / "model_int8.tflite"
        _tflite_export(model, config.data.max_length, tflite)
        tokenizer = modeling.load_tokenizer(run / "model")
        encoded = encode_batch(tokenizer, test_texts, None, config.data.max_length, config.data.truncation)
        probabilities, seconds = _tflite_predict(tflite, encoded)
        report.update({
            "compact_format": "tflite dynamic-range int8",
            "compact_mib": round(tflite.stat().st_size / 2**20, 1),
            "compact_size_ratio": round(tflite.stat().st_size / _dir_size(predictor.path), 3),
            "compact_samples_per_s_batch1": round(len(test_texts) / seconds, 1),
            "compact_test_macro_f1": round(evaluate_predictions(probabilities, test_labels,
                                                                corpus.label_names).metrics["macro_f1"], 4),
        })
    except Exception as error:  # the benchmark reports what failed instead of hiding it
        report["compact_error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
    report["peak_rss_mib_total"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    from tfbert.cli import run_main

    sys.exit(run_main(main))
