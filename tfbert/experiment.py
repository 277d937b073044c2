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
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from tfbert import backends, baseline, distribution, keras_training, resume, runs, runtime, tasks, windows
from tfbert.config import TrainConfig
from tfbert.diagnose import library_versions
from tfbert.errors import TfbertError
from tfbert.html_report import write_run_html
from tfbert.task_metrics import ValidationPasses, task_baseline
from tfbert.training import CHECKPOINT_DIR

logger = logging.getLogger(__name__)

# Batch lengths are rounded up to a multiple of this unless --pad_to_multiple_of says otherwise.
DEFAULT_PAD_MULTIPLE = 8


@dataclass
class Prepared:
    """What the run reads, loaded and checked before anything is written."""

    corpus: Any  # tfbert.data.corpus.Corpus: the split examples and how they were made
    encoded: Any  # datasets.DatasetDict: the splits with the model's input columns and n_tokens
    tokenizer: Any
    checkpoint: Path  # the model to fine-tune, resolved to a folder
    checks: Any  # tfbert.data.checks.DataChecks: unknown-token share, overlap, warnings
    backend: Any = None  # tfbert.backends.Backend: the model layer that trains (keras | transformers), and why
    train_lengths: np.ndarray = field(repr=False, default=None)  # tokens per training text, before truncation
    gold: dict[str, np.ndarray] = field(repr=False, default_factory=dict)  # label ids of validation and test

    @property
    def label_names(self) -> list[str]:
        return self.corpus.label_names

    def labels(self, split: str) -> np.ndarray:
        """Gold label ids of ``split``, in its order."""
        if split not in self.gold:
            self.gold[split] = np.asarray(self.encoded[split]["label"])
        return self.gold[split]


@dataclass
class RunContext:
    """Where and how the run happens: its settings, folder, process set-up, and the console."""

    config: TrainConfig
    run: runs.Run
    policy: str  # the training precision policy
    export_policy: str
    export_weights: str  # constants or variables
    compact_export: bool  # --export_tflite resolved
    fused: bool
    strategy: Any
    pad_multiple: int
    scratch: Optional[Path] = None  # on a cluster's non-chief workers: where their copy of the run goes, then dropped
    backed_up: Optional[Path] = None  # the run folder holding the backups: the chief's, on every worker
    report: Callable[[str], None] = print
    started: float = field(default_factory=time.time)


@dataclass
class Results:
    """What the steps after training produce, one field per step."""

    model: Any  # holds the best epoch's weights
    fitted: Any  # tfbert.training.FitResult
    validation_outputs: Optional[np.ndarray]  # the best epoch's validation pass, if this process ran it
    peak_rss_mib_training: Optional[float]
    evaluations: dict = field(default_factory=dict)  # split -> tfbert.evaluation.Evaluation
    figures: dict = field(default_factory=dict)  # name -> PNG path
    saved_model: Optional[Path] = None
    compact: Optional[dict] = None


@runtime.returning_freed_memory  # to the next run of a sweep, or the bench's predictions
def train(config: TrainConfig, report=print, given_flags: Optional[set[str]] = None) -> dict:
    """Fine-tune, evaluate and export as ``config`` says (with --resume: continue that run); return the summary.

    Nothing is written before the data, model and settings have been checked, so bad input leaves no run folder;
    a run that fails later is marked failed (interrupted, if stopped by a signal) and keeps its checkpoints.
    """
    from tfbert.backup import RunInterrupted

    runtime.quiet_libraries()
    config = resume.resumed_config(config, given_flags)  # the flags the user gave, if known
    prepared = prepare(config, report)
    context = _start_run(config, prepared, report)
    try:
        return _run_steps(context, prepared)
    except (RunInterrupted, KeyboardInterrupt) as stop:
        runs.set_status(context.run, "interrupted", signal=getattr(stop, "signal_number", 2))
        raise RunInterrupted(getattr(stop, "signal_number", 2), context.run.path) from None
    except Exception as error:
        runs.set_status(context.run, "failed", error=f"{type(error).__name__}: {error}")
        raise


def _run_steps(context: RunContext, prepared: Prepared) -> dict:
    """The run after set-up, in the order a reader follows it."""
    _write_config(context, prepared)
    results = _fit(context, prepared)
    results.evaluations = _evaluate_and_write(context, prepared, results.model, results.validation_outputs)
    if context.scratch:  # a non-chief worker: it trained and predicted with the others; the chief writes the rest
        return distribution.finish_worker(context.strategy, context.scratch, results.fitted, results.evaluations)
    results.figures = _draw_figures(context, prepared, results)
    results.saved_model = _export(context, prepared, results)
    if context.compact_export:  # from either backend's model/, with the SavedModel written
        from tfbert.layer_drop import export_compact

        results.compact = export_compact(context.run, prepared, context.config,
                                         model_test=results.evaluations["test"].metrics)
    return _finish(context, prepared, results)


def prepare(config: TrainConfig, report=print) -> Prepared:
    """Load, check and tokenise the data and the tokenizer; report the data and any warning. Writes nothing."""
    from tfbert.data.checks import check_data, describe_data
    from tfbert.data.corpus import load_corpus
    from tfbert.data.pipeline import tokenize
    from tfbert.modeling import load_tokenizer, model_max_length, resolve_checkpoint

    data, model_settings = config.data, config.model
    corpus = load_corpus(data, seed=config.training.seed)
    tasks.check_settings(config, corpus.task)
    checkpoint = resolve_checkpoint(model_settings.model_name)
    backend = backends.for_run(config, checkpoint, corpus.task)  # before tokenising: a refused backend fails at once
    tokenizer = load_tokenizer(checkpoint, model_settings.word_tokenizer)
    limit = model_max_length(checkpoint, tokenizer)
    if data.max_length > limit:
        raise TfbertError(f"--max_length {data.max_length} is over the model's limit of {limit} tokens; use {limit} or less")
    windows.check_stride(tokenizer, data, corpus.has_text_pair)
    encoded = tokenize(corpus.splits, tokenizer, data.max_length, data.truncation, data.tokenization_cache(),
                       windows.stride_of(data))
    checks = check_data(corpus, encoded, tokenizer, model_settings.model_name)
    prepared = Prepared(corpus=corpus, encoded=encoded, tokenizer=tokenizer, checkpoint=checkpoint, checks=checks,
                        train_lengths=np.asarray(encoded["train"]["n_tokens"]), backend=backend)
    report(describe_data(corpus, encoded["train"], prepared.train_lengths, data.max_length))
    for warning in checks.warnings:  # now, so that a user can stop the run; the summary repeats them
        logger.warning(warning)
    return prepared


def _start_run(config: TrainConfig, prepared: Prepared, report) -> RunContext:
    """Set up the process (strategy first, precision, fused ops, seeds); create the run folder, marked running."""
    settings = config.training
    strategy = distribution.select_strategy(settings.strategy, settings.tpu, settings.batch_size)  # before TF's 1st op
    policy = runtime.resolve_precision(settings.precision)
    runtime.set_precision(policy)
    fused = runtime.use_fused_ops(settings.fused_ops) and config.model.keras_backend == "tensorflow"  # not on JAX
    runtime.set_seed(settings.seed, settings.deterministic)
    output_dir, plots_dir, scratch = distribution.run_roots(strategy, settings.output_dir, settings.plots_dir)
    # Only the chief resumes a run folder; the other workers of a cluster write into a scratch folder.
    run = (runs.create_run(output_dir, plots_dir, prepared.corpus.name, config.model.model_name) if scratch
           else resume.open_or_create_run(config, prepared.corpus))
    runs.set_status(run, "running")
    export_policy = runtime.resolve_export_precision(settings.export_precision, policy)
    return RunContext(
        config=config, run=run, policy=policy, fused=fused, strategy=strategy, report=report, scratch=scratch,
        backed_up=resume.cluster_run_dir(config, prepared.corpus) if scratch else run.path, export_policy=export_policy,
        export_weights=runtime.resolve_export_weights(settings.export_weights),
        compact_export=runtime.resolve_compact_export(settings.export_tflite, config.model.keras_backend),
        pad_multiple=settings.pad_to_multiple_of or (16 if settings.xla else DEFAULT_PAD_MULTIPLE),
    )


def _write_config(context: RunContext, prepared: Prepared) -> None:
    """config.json (every setting, what they resolved to, data record, versions) and splits.json."""
    import tensorflow as tf

    config, corpus, strategy = context.config, prepared.corpus, context.strategy
    runs.write_json(context.run.path / "config.json", {
        "run_id": context.run.run_id,
        "command": sys.argv,
        "settings": config.to_dict(),
        "resolved": {
            "checkpoint": str(prepared.checkpoint),
            **prepared.backend.describe(),
            "task": corpus.task,
            "precision_policy": context.policy,
            "fused_ops": context.fused,
            "export_precision_policy": context.export_policy, "export_weights": context.export_weights,
            "compact_export": context.compact_export,
            "pad_to_multiple_of": context.pad_multiple,
            **distribution.describe(strategy),
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
            "truncated_share": float((prepared.train_lengths > config.data.max_length).mean()),
        },
        "versions": {name: found for name, found in library_versions().items() if found},
    })
    runs.write_json(context.run.path / "splits.json", corpus.split_record)


def _fit(context: RunContext, prepared: Prepared) -> Results:
    """Build the model and train it; it ends holding the best epoch's weights."""
    from tfbert import training
    from tfbert.data.pipeline import training_dataset

    if prepared.backend.is_keras:
        return Results(*keras_training.fit(context, prepared), peak_rss_mib_training=runtime.peak_rss_mib())
    settings, encoded = context.config.training, prepared.encoded
    n_train = windows.window_count(encoded["train"])  # examples per epoch: a windowed text gives one per window
    update_batch = settings.batch_size * settings.grad_accum_steps  # examples per optimizer update
    steps_per_epoch = -(-n_train // update_batch)
    model = _compiled_model(context, prepared, steps_per_epoch * settings.epochs)
    train_data = training_dataset(encoded["train"], prepared.tokenizer, update_batch, settings.seed,
                                  pad_multiple=context.pad_multiple, repeat=True)

    evaluate_validation = ValidationPasses(model, encoded["validation"], prepared.tokenizer, prepared.label_names,
                                           settings.batch_size * 2, prepared.corpus.task, settings.threshold,
                                           context.config.data.window_pool)
    class_weight = None
    if settings.class_weight == "balanced":
        class_weight = training.balanced_class_weight(np.asarray(encoded["train"]["label"]),
                                                      len(prepared.label_names))
    verbose, progress_every = training.progress_mode(settings, steps_per_epoch, sys.stdout.isatty())
    fitted = training.fit(
        model, train_data, epochs=settings.epochs, evaluate_validation=evaluate_validation,
        run_dir=context.run.path, patience=settings.patience, class_weight=class_weight, n_train=n_train,
        steps_per_epoch=steps_per_epoch, n_train_tokens=windows.token_count(encoded["train"]),
        verbose=verbose, progress_every=progress_every, examples_per_step=update_batch, save_every=settings.save_every,
        backup_run_dir=context.backed_up, monitor=tasks.monitor(prepared.corpus.task),
        warm_up_validation=evaluate_validation.warm_up)
    # Peak memory before evaluation and export add their own.
    return Results(model, fitted, evaluate_validation.outputs_of(fitted.best_epoch, fitted.epochs_run),
                   peak_rss_mib_training=runtime.peak_rss_mib())


def _compiled_model(context: RunContext, prepared: Prepared, total_steps: int):
    """The classifier under the run's strategy, with AdamW, its schedule and gradient accumulation."""
    from tfbert import fused_ops, modeling, training

    settings, model_settings, task = context.config.training, context.config.model, prepared.corpus.task
    with context.strategy.scope():
        model = modeling.load_for_training(
            prepared.checkpoint, prepared.label_names,
            freeze_encoder=model_settings.freeze_encoder, head_hidden_size=model_settings.head_hidden_size,
        )
        tasks.start_head(model, task, prepared.labels("train"))
        if context.fused:
            logger.info("fused ops: %s", fused_ops.fuse(model))
        fused_ops.seed_dropouts(model)  # any dropout left draws from the seeded, backed-up generator
        optimizer = training.make_optimizer(
            model, settings.lr, settings.weight_decay, int(settings.warmup_ratio * total_steps), total_steps
        )
        model.compile(optimizer=optimizer, loss=tasks.loss(task), metrics=tasks.keras_metrics(task),
                      jit_compile=settings.xla)
        training.accumulate_gradients(model, settings.grad_accum_steps)
        training.trace_steps_once(model)
    return model


def _evaluate_and_write(context: RunContext, prepared: Prepared, model, validation_outputs=None) -> dict:
    """Score the best epoch's weights on validation (its pass's outputs, if kept) and test; write the files."""
    from tfbert.evaluation import predict_probabilities, write_evaluation_files
    from tfbert.task_metrics import evaluate_split

    settings, names, encoded, task = context.config.training, prepared.label_names, prepared.encoded, prepared.corpus.task
    evaluations, predictions = {}, {}
    for split in ("validation", "test"):
        probabilities = validation_outputs if split == "validation" and validation_outputs is not None else \
            predict_probabilities(model, encoded[split], prepared.tokenizer, settings.batch_size * 2, task,
                                  context.config.data.window_pool)
        gold, row_ids = prepared.labels(split), encoded[split]["row_id"]
        evaluations[split], predictions[split] = evaluate_split(  # multi-label thresholds: set on validation
            task, probabilities, gold, names, row_ids, settings.threshold, evaluations.get("validation"),
            texts=encoded[split]["text"], top_errors=settings.top_errors)
    write_evaluation_files(context.run.path, evaluations, predictions)
    return evaluations


def _draw_figures(context: RunContext, prepared: Prepared, results: Results) -> dict[str, Path]:
    """Loss and metric curves, the test confusion matrix and the length histogram, under plots/."""
    from tfbert import plots, task_plots

    folder = context.run.plots
    figures = plots.plot_curves(results.fitted.history, folder)
    figures.update(task_plots.run_figures(prepared, context.run.path, results.evaluations["test"], folder))
    figures["lengths"] = plots.plot_lengths(prepared.train_lengths, context.config.data.max_length, folder)
    return figures


def _export(context: RunContext, prepared: Prepared, results: Results) -> Path:
    """The save_pretrained folder (renamed into place whole) and the TF Serving SavedModel; return its path."""
    from tfbert import fused_ops, modeling, runtime
    from tfbert.export import export_saved_model
    from tfbert.model_settings import ModelSettings

    if prepared.backend.is_keras:
        return keras_training.export(context, prepared, results)
    config, run = context.config, context.run
    data, model_settings = config.data, config.model
    staging = run.path / "model.partial"
    thresholds = tasks.thresholds_of(results.evaluations["validation"].metrics, prepared.label_names)  # multi-label
    modeling.save_classifier(results.model, prepared.tokenizer, staging, ModelSettings(
        labels=list(prepared.label_names), max_length=data.max_length, truncation=data.truncation,
        word_tokenizer=model_settings.word_tokenizer,
        uses_token_type_ids="token_type_ids" in prepared.tokenizer.model_input_names,
        head_hidden_size=model_settings.head_hidden_size if model_settings.freeze_encoder else 0,
        task=prepared.corpus.task, thresholds=thresholds, text_pairs=prepared.corpus.has_text_pair,
        long_text=data.long_text, stride=data.stride, window_pool=data.window_pool,
    ))
    staging.rename(run.model_dir)
    # The export is built afresh from the saved folder in its own precision (not the training one),
    # rewritten for TensorFlow's graph optimiser rather than XLA, which stock TF Serving does not run.
    runtime.set_precision(context.export_policy)
    serving_model = modeling.load_classifier(run.model_dir)
    logger.info("serving rewrites: %s", fused_ops.fuse(serving_model, for_serving=True))
    return export_saved_model(
        serving_model, prepared.tokenizer, id2label=dict(enumerate(prepared.label_names)),
        max_length=data.max_length, base_dir=run.saved_model_base, truncation=data.truncation,
        weights_in_graph=context.export_weights == "constants", task=prepared.corpus.task, thresholds=thresholds,
        stride=windows.stride_of(data), window_pool=data.window_pool, text_pairs=prepared.corpus.has_text_pair,
    )


def _finish(context: RunContext, prepared: Prepared, results: Results) -> dict:
    """metrics.json and report.md, checkpoints/ dropped (unless --keep_checkpoints), status finished; the summary."""
    from tfbert.report import write_report

    run, settings = context.run, context.config.training
    metrics = _metrics(context, prepared, results)
    write_report(run, context.config, prepared.corpus, metrics, results.evaluations, results.figures,
                 results.saved_model, context.policy, prepared.train_lengths)
    runs.write_json(run.path / "metrics.json", metrics)
    if not settings.keep_checkpoints:
        shutil.rmtree(run.path / CHECKPOINT_DIR, ignore_errors=True)  # a failed run never gets here: it keeps them
    runs.set_status(run, "finished")
    test, validation = results.evaluations["test"], results.evaluations["validation"]
    return {
        "run_dir": str(run.path),
        "plots_dir": str(run.plots),
        "saved_model": str(results.saved_model),
        "best_epoch": results.fitted.best_epoch,
        **tasks.summary_scores(prepared.corpus.task, validation.metrics, test.metrics),
        **({"baseline_test_macro_f1": metrics["baseline"]["test"]["macro_f1"]} if "baseline" in metrics else {}),
        "train_seconds": metrics["train_seconds"],
        "run_mib": metrics["run_mib"],
        **({"warnings": metrics["warnings"]} if metrics["warnings"] else {}),
    }


def _metrics(context: RunContext, prepared: Prepared, results: Results) -> dict:
    """metrics.json: best-epoch scores, speed, memory, data checks and warnings, and the run's size on disk."""
    fitted, test = results.fitted, results.evaluations["test"]
    metrics = {
        "best_epoch": fitted.best_epoch,
        "epochs_run": fitted.epochs_run,
        "validation": results.evaluations["validation"].metrics,
        "test": test.metrics,
        "confusion_test": test.confusion,
        "train_seconds": round(fitted.train_seconds, 2),
        "train_examples_per_second": round(fitted.train_examples_per_second, 2),
        "train_examples_per_second_after_first_step": round(fitted.steady_examples_per_second, 2),
        "train_tokens_per_second_after_first_step": round(fitted.steady_tokens_per_second, 1),
        "precision_policy": context.policy,
        "peak_rss_mib_training": results.peak_rss_mib_training,
        "total_seconds": round(time.time() - context.started, 2),
        **({"compact": results.compact} if results.compact else {}),
    }
    metrics["data_checks"] = prepared.checks.to_dict()
    metrics["warnings"] = list(prepared.checks.warnings)
    metrics["parameters"] = int(results.model.count_params())
    if context.config.training.baseline == "on" and prepared.corpus.task != "regression":
        metrics["baseline"] = task_baseline(prepared.corpus, context.config.training)
        metrics["warnings"] += filter(None, [baseline.below_baseline_warning(test.metrics["macro_f1"],
                                                                             metrics["baseline"])])
    write_run_html(context.run, prepared, results, metrics)  # before the size: the page is part of the run
    dropped = () if context.config.training.keep_checkpoints else (CHECKPOINT_DIR,)
    metrics["run_mib"] = runs.size_mib(context.run, leaving_out=dropped)
    return metrics

