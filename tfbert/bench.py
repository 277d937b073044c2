"""A fixed benchmark workload; prints one JSON object.

    python -m tfbert.bench --train_file ../shared/data/splits/ag_news_train.jsonl \\
        --test_file ../shared/data/splits/ag_news_test.jsonl --epochs 2 --precision bfloat16

It trains with train.py's code path (same flags), then measures the exported SavedModel (text in):
predict samples/s at batch 32 (batched by length as infer.py does, and in the file's order as the
reference's Trainer.predict), single-text latency p50/p99 after warm-up, and the compact export
(train.py --export_tflite: TFLite, dynamic-range int8 weights, encoder layers left out as
--compact_layers says): size, layers, speed (text in, as infer.py runs it), single-text latency and
macro-F1. Rates are medians of three passes over the test split after an untimed one. A person's first
prediction: cold ``python infer.py TEXT`` from the SavedModel, the compact export and the run folder (medians of
five processes). Compare with
../shared/bench/reference_hf_trainer.py run on the same files in the same session.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np

import tfbert  # noqa: F401
from tfbert.errors import TfbertError


def _cpu_peak_gflops() -> float:
    """fp32 peak of this CPU from its clock and AVX-512 FMA width (2 FMA units x 16 lanes x 2 FLOPs)."""
    mhz = [float(line.split(":")[1]) for line in open("/proc/cpuinfo") if line.startswith("cpu MHz")]
    return os.cpu_count() * (max(mhz) if mhz else 2000.0) / 1000 * 64


def _texts_per_second(predict, texts: list[str], pairs: Optional[list[str]],
                      passes: int = 3) -> tuple[float, np.ndarray]:
    """Median rate of ``passes`` passes of ``predict(texts, pairs)``, after one untimed pass (whose outputs are
    returned) in which the predictor meets every batch shape once."""
    outputs = predict(texts, pairs)
    rates = []
    for _ in range(passes):
        started = time.perf_counter()
        predict(texts, pairs)
        rates.append(len(texts) / (time.perf_counter() - started))
    return statistics.median(rates), outputs


def _latencies_ms(predict, texts: list[str], pairs: Optional[list[str]]) -> list[float]:
    """Sorted single-text latencies over ``texts`` (with their ``pairs``), after 20 untimed calls."""
    latencies = []
    for i in list(range(min(20, len(texts)))) + list(range(len(texts))):
        started = time.perf_counter()
        predict([texts[i]], [pairs[i]] if pairs is not None else None)
        latencies.append(1000 * (time.perf_counter() - started))
    return sorted(latencies[min(20, len(texts)):])


def _percentile(sorted_values: list[float], share: float) -> float:
    return round(sorted_values[int(share * (len(sorted_values) - 1))], 2)


def _measure_compact(folder: Path, test: dict, score, saved_model_rate: float, recorded: dict) -> dict:
    """Speed (text in; length-sorted batches, and one text per call), size and the task's metric of compact/
    (``test``: texts and pairs; ``score(outputs)``: the test metric)."""
    from tfbert.predictors import TFLitePredictor

    compact = TFLitePredictor(folder)  # tokenises with the tokenizer shipped in compact/
    rate, outputs = _texts_per_second(compact.predict, test["texts"], test["pairs"])
    latencies = _latencies_ms(compact.predict, test["texts"][:100], test["pairs"] and test["pairs"][:100])
    return {
        "compact_format": recorded["format"],
        "compact_mib": recorded["mib"],
        "compact_size_ratio": recorded["size_vs_saved_model"],
        "compact_encoder_layers": recorded["encoder_layers"],
        "compact_left_out_layers": recorded["left_out_layers"],
        "compact_layer_search_seconds": recorded.get("layer_search", {}).get("seconds"),
        "compact_export_seconds": recorded.get("seconds"),  # the layer search included
        "compact_interpreters": compact.interpreters,
        f"compact_samples_per_s_batch{compact.batch_size}": round(rate, 1),
        "compact_speed_vs_saved_model": round(rate / saved_model_rate, 2),
        "compact_single_text_latency_ms_p50": _percentile(latencies, 0.5),
        f"compact_test_{recorded['metric']}": round(score(outputs), 4),
    }


def _no_compact_export(argv: list[str]) -> str:
    """Why the run may not get --export_tflite, or "": not with Keras 3 on JAX (the compact export traces in
    TensorFlow)."""
    from tfbert.config import TrainConfig, build_parser, parse_sections

    parser = build_parser("python -m tfbert.bench", BENCH_DESCRIPTION)
    config = TrainConfig(*parse_sections(parser, argv))
    return "no compact export with --keras_backend jax" if config.model.keras_backend == "jax" else ""


def _non_embedding_parameters(folder: Path, backend: str) -> int:
    """Parameters outside the embedding tables, in float32 (the model FLOPs utilisation counts these)."""
    if backend == "keras":
        import keras

        from tfbert import keras_backend

        keras.mixed_precision.set_global_policy("float32")
        weights = [(v.path, v.shape) for v in keras_backend.load(folder).weights]
    else:
        import tensorflow as tf

        from tfbert import modeling

        tf.keras.mixed_precision.set_global_policy("float32")
        weights = [(v.name, v.shape) for v in modeling.load_classifier(folder).weights]
    return sum(int(np.prod(shape)) for name, shape in weights if "embedding" not in name)


def _cold_infer_seconds(model: Path, text: str, repeats: int = 5) -> float:
    """Median wall seconds of ``python infer.py TEXT --model MODEL`` over ``repeats`` fresh processes: what a person
    waits for a first answer (interpreter start, imports, model load, one prediction)."""
    script = Path(__file__).resolve().parent.parent / "infer.py"
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        completed = subprocess.run([sys.executable, str(script), text, "--model", str(model)], capture_output=True,
                                   text=True)
        seconds.append(time.perf_counter() - started)
        if completed.returncode != 0:
            raise TfbertError(f"infer.py --model {model} failed: {completed.stderr.strip()[-300:]}")
    return round(statistics.median(seconds), 2)


def first_prediction_seconds(run: Path, text: str = "この商品は最高です", repeats: int = 5) -> dict:
    """Cold ``infer.py`` on one text from the run's SavedModel, its compact export and the run folder itself
    (medians of ``repeats`` processes each), and the export the run folder answers with.

    Example:
        >>> first_prediction_seconds(Path("output/sms_spam/all-MiniLM-L6-v2/20261205_080000"))  # doctest: +SKIP
        {'infer_cold_seconds_saved_model': 6.1, 'infer_cold_seconds_compact': 0.4, ...}
    """
    from tfbert.export_tflite import MODEL_FILE
    from tfbert.model_choice import choose_export

    has_compact = (run / "compact" / MODEL_FILE).is_file()
    return {
        "infer_cold_seconds_saved_model": _cold_infer_seconds(run / "saved_model", text, repeats),
        "infer_cold_seconds_compact": _cold_infer_seconds(run / "compact", text, repeats) if has_compact else None,
        "infer_cold_seconds_run_folder": _cold_infer_seconds(run, text, repeats),
        "infer_run_folder_answers_with": choose_export(run).kind,
    }


BENCH_DESCRIPTION = (
    "Train with train.py's flags, then measure the SavedModel and the compact export; print one JSON object. "
    "It always adds --export_tflite, --patience 0 (every epoch runs), --quiet, and --output_dir/--plots_dir "
    "in a temporary folder, whatever is given for them (--export_tflite not with --keras_backend jax)."
)


def main(argv: list[str] | None = None) -> int:
    from tfbert.cli import setup_logging
    from tfbert.config import parse_train_args

    argv = list(sys.argv[1:] if argv is None else argv)
    workdir = Path(tempfile.mkdtemp(prefix="tfbert-bench-"))
    no_compact = _no_compact_export(argv)
    forced = ["--quiet", "--output_dir", str(workdir / "output"), "--plots_dir", str(workdir / "plots"),
              "--patience", "0"] + ([] if no_compact else ["--export_tflite"])
    config = parse_train_args(argv + forced, prog="python -m tfbert.bench", description=BENCH_DESCRIPTION)
    setup_logging(quiet=True, verbose=config.training.verbose)
    from tfbert import runtime

    runtime.import_tensorflow(config.training.verbose)
    from tfbert.experiment import train

    summary = train(config, report=lambda line: None)
    run = Path(summary["run_dir"])
    metrics = json.loads((run / "metrics.json").read_text())
    resolved = json.loads((run / "config.json").read_text())["resolved"]

    from tfbert import runs, runtime, tasks
    from tfbert.data.corpus import load_corpus
    from tfbert.predictors import SavedModelPredictor
    from tfbert.task_metrics import evaluate_task

    corpus = load_corpus(config.data, seed=config.training.seed)
    split = corpus.splits["test"]
    test = {"texts": list(split["text"]),
            "pairs": list(split["text_pair"]) if "text_pair" in split.column_names else None}
    test_texts, pairs = test["texts"], test["pairs"]
    predictor = SavedModelPredictor(run / "saved_model", batch_size=32)
    task, metric = predictor.task, tasks.monitor(predictor.task).removeprefix("val_")

    def score(outputs: np.ndarray) -> float:
        """The task's test metric of ``outputs``, at the model's thresholds."""
        return evaluate_task(task, outputs, np.asarray(split["label"]), corpus.label_names,
                             predictor.thresholds).metrics[metric]

    predict_rate, saved_outputs = _texts_per_second(predictor.predict, test_texts, pairs)  # by length, as infer.py
    input_order_rate, _ = _texts_per_second(  # batches in the file's order, as the reference's Trainer.predict
        lambda texts, text_pairs: predictor.predict(texts, text_pairs, sort_by_length=False), test_texts, pairs)
    latencies = _latencies_ms(predictor.predict, test_texts[:100], pairs and pairs[:100])

    n_params = _non_embedding_parameters(run / "model", resolved["backend"])
    tokens_per_second = metrics["train_tokens_per_second_after_first_step"]
    report = {
        "run_dir": str(run),
        "backend": resolved["backend"],
        "precision_policy": metrics["precision_policy"],
        "n_train": corpus.sizes()["train"],
        "n_test": len(test_texts),
        "train_seconds": metrics["train_seconds"],
        "train_samples_per_s": metrics["train_examples_per_second"],
        "train_samples_per_s_after_first_step": metrics["train_examples_per_second_after_first_step"],
        "train_tokens_per_s_after_first_step": tokens_per_second,
        "model_flop_utilization_vs_fp32_avx512_peak": round(6 * n_params * tokens_per_second / (_cpu_peak_gflops() * 1e9), 4),
        "peak_rss_mib_training": metrics["peak_rss_mib_training"],  # at the end of fit
        "task": task,
        **{key: round(value, 4) for key, value in tasks.summary_scores(task, metrics["validation"],
                                                                        metrics["test"]).items()},
        "export_precision_policy": resolved["export_precision_policy"],
        "export_weights": resolved["export_weights"],
        "fused_ops": resolved["fused_ops"],
        "saved_model_predict_samples_per_s_batch32": round(predict_rate, 1),
        "saved_model_predict_samples_per_s_batch32_input_order": round(input_order_rate, 1),
        f"saved_model_test_{metric}": round(score(saved_outputs), 4),
        "single_text_latency_ms_p50": _percentile(latencies, 0.5),
        "single_text_latency_ms_p99": _percentile(latencies, 0.99),
        "saved_model_mib": round(runs.folder_bytes(predictor.path) / 2**20, 1),
    }
    if config.data.long_text == "window":
        report.update(long_text="window", stride=config.data.stride, window_pool=config.data.window_pool)
    if "compact" not in metrics:
        report["compact_error"] = no_compact
    elif "error" in metrics["compact"]:  # the benchmark reports what failed instead of hiding it
        report["compact_error"] = metrics["compact"]["error"]
    else:
        report.update(_measure_compact(run / "compact", test, score, predict_rate, metrics["compact"]))
    report["peak_rss_mib_total"] = runtime.peak_rss_mib()  # of this process: the cold infer.py runs are others
    report.update(first_prediction_seconds(run, test_texts[0]))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    from tfbert.cli import run_main

    sys.exit(run_main(main))
