"""Training and saving with the Keras 3 backend: the keras-hub classifier fitted on tfbert's tf.data.

The run is the transformers path's, step for step, in Keras 3's own parts: AdamW with the same schedule and
no-decay rules (:mod:`tfbert.keras_optimizer`), gradient accumulation by the optimizer
(``gradient_accumulation_steps``), validation macro-F1 from one prediction pass per epoch, the best epoch's
weights kept in ``checkpoints/best.weights.h5``, early stopping, log.csv and TensorBoard, mixed precision through
``keras.mixed_precision`` and the run's tf.distribute strategy. The run folder has the same files; ``model/``
holds :func:`tfbert.keras_backend.save`'s output beside the tokenizer and tfbert.json.

Example:
    >>> from tfbert.keras_training import compiled_model, fit_model
    >>> model = compiled_model(folder, ["neg", "pos"], strategy=strategy, lr=5e-5, weight_decay=0.01,
    ...                        warmup_steps=10, total_updates=100)  # doctest: +SKIP
    >>> fitted = fit_model(model, train_data, epochs=3, steps_per_epoch=34, evaluate_validation=evaluate,
    ...                    run_dir=run_dir, patience=2, n_train=1000)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from tfbert import fit_callbacks, fused_ops
from tfbert.errors import TfbertError
from tfbert.fit_callbacks import MONITOR, FitResult

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"  # as tfbert.training's: dropped when the run finishes unless kept
BEST_WEIGHTS = "best.weights.h5"


def compiled_model(checkpoint, label_names: list[str], *, strategy, lr: float, weight_decay: float,
                   warmup_steps: int, total_updates: int, accumulation_steps: int = 1, freeze_encoder: bool = False,
                   head_hidden_size: int = 0, dropout: Optional[float] = None, jit_compile: bool = False):
    """The keras-hub classifier under ``strategy``, compiled with AdamW, its schedule and gradient accumulation.

    Args:
        checkpoint: a checkpoint folder (config.json + model.safetensors) or Hub id.
        label_names: the classes, in label-id order.
        warmup_steps, total_updates: the schedule, in optimizer updates.
        accumulation_steps: batches whose mean gradient makes one update.
        dropout: overrides the checkpoint's dropout rates (tests set 0 to compare updates).

    Example:
        >>> model = compiled_model("/models/bert", ["neg", "pos"], strategy=tf.distribute.get_strategy(), lr=5e-5,
        ...                        weight_decay=0.01, warmup_steps=0, total_updates=10)  # doctest: +SKIP
    """
    import keras

    from tfbert.keras_backend import build_classifier
    from tfbert.keras_optimizer import make_optimizer

    with strategy.scope():
        model = build_classifier(checkpoint, label_names, freeze_encoder=freeze_encoder,
                                 head_hidden_size=head_hidden_size, dropout=dropout)
        optimizer = make_optimizer(model, lr, weight_decay, warmup_steps, total_updates, accumulation_steps)
        model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"], jit_compile=jit_compile)  # Keras 3's "auto" would pick XLA on TF
    return model


def fit_model(model, train_data, *, epochs: int, steps_per_epoch: int, evaluate_validation: Callable[[], dict],
              run_dir: Path, patience: int, n_train: int, n_train_tokens: int = 0,
              class_weight: Optional[dict[int, float]] = None, verbose: int = 1, progress_every: int = 0,
              examples_per_step: int = 0) -> FitResult:
    """Fit with validation macro-F1 each epoch, the best epoch's weights kept, early stopping, CSV and TensorBoard
    logs; at the end the model holds the best epoch's weights.

    ``steps_per_epoch`` counts batches (with gradient accumulation, updates x accumulation steps).

    Example:
        >>> fitted = fit_model(model, data, epochs=3, steps_per_epoch=10, evaluate_validation=evaluate,
        ...                    run_dir=Path("run"), patience=0, n_train=320)  # doctest: +SKIP
        >>> fitted.best_epoch  # doctest: +SKIP
        3
    """
    import keras

    run_dir = Path(run_dir)
    best_path = run_dir / CHECKPOINT_DIR / BEST_WEIGHTS
    best_path.parent.mkdir(parents=True, exist_ok=True)
    timer = fit_callbacks.step_timer(keras)
    logs = fit_callbacks.epoch_logs(keras)
    callbacks = [
        timer,
        fit_callbacks.validation_metrics(evaluate_validation, keras),  # first: the others read val_macro_f1
        keras.callbacks.ModelCheckpoint(str(best_path), monitor=MONITOR, mode="max", save_best_only=True,
                                        save_weights_only=True),
        keras.callbacks.CSVLogger(str(run_dir / "log.csv"), append=True),
        keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard"), write_graph=False, profile_batch=0),
    ]
    if progress_every:
        callbacks.append(fit_callbacks.step_progress(steps_per_epoch, examples_per_step, progress_every,
                                                     keras_module=keras))
    if patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=MONITOR, mode="max", patience=patience))
    callbacks.append(logs)  # last: it keeps what every other callback added
    started = time.perf_counter()
    model.fit(train_data, epochs=epochs, steps_per_epoch=steps_per_epoch, callbacks=callbacks,
              class_weight=class_weight, verbose=verbose, shuffle=False)  # tf.data shuffles, seeded
    seconds = time.perf_counter() - started
    model.load_weights(str(best_path))
    return fit_callbacks.fit_result(logs.epoch_logs, timer, seconds, n_train, n_train_tokens)


def fit(context, prepared):
    """experiment's fit step for a Keras 3 run: (the model holding the best epoch's weights, its FitResult, that
    epoch's validation outputs or None).

    ``context`` and ``prepared`` are tfbert.experiment's RunContext and Prepared.
    """
    import keras

    from tfbert import training
    from tfbert.data.pipeline import training_dataset
    from tfbert.task_metrics import ValidationPasses

    settings, model_settings, encoded = context.config.training, context.config.model, prepared.encoded
    if keras.backend.backend() == "jax" and context.strategy.num_replicas_in_sync > 1:
        raise TfbertError("--keras_backend jax trains on one device here; use --strategy default")
    keras.mixed_precision.set_global_policy(context.policy)
    keras.utils.set_random_seed(settings.seed)  # Keras 3's own seed generator: head initialisers, dropout
    accumulation = settings.grad_accum_steps
    n_train = len(encoded["train"])
    updates_per_epoch = -(-n_train // (settings.batch_size * accumulation))
    total_updates = updates_per_epoch * settings.epochs
    model = compiled_model(
        prepared.checkpoint, prepared.label_names, strategy=context.strategy, lr=settings.lr,
        weight_decay=settings.weight_decay, warmup_steps=int(settings.warmup_ratio * total_updates),
        total_updates=total_updates, accumulation_steps=accumulation, freeze_encoder=model_settings.freeze_encoder,
        head_hidden_size=model_settings.head_hidden_size,
        jit_compile=settings.xla or keras.backend.backend() == "jax")  # un-jitted JAX runs op by op
    if context.fused:
        logger.info("fused ops: %s", fused_ops.fuse_keras3(model))
    # Batches of --batch_size; the optimizer sums --grad_accum_steps of them into one update.
    train_data = training_dataset(encoded["train"], prepared.tokenizer, settings.batch_size, settings.seed,
                                  pad_multiple=context.pad_multiple, repeat=True)
    class_weight = None
    if settings.class_weight == "balanced":
        class_weight = training.balanced_class_weight(np.asarray(encoded["train"]["label"]), len(prepared.label_names))
    steps_per_epoch = updates_per_epoch * accumulation
    verbose, progress_every = training.progress_mode(settings, steps_per_epoch, sys.stdout.isatty())
    validation = ValidationPasses(model, encoded["validation"], prepared.tokenizer, prepared.label_names,
                                  settings.batch_size * 2)
    fitted = fit_model(
        model, train_data, epochs=settings.epochs, steps_per_epoch=steps_per_epoch, run_dir=context.run.path,
        evaluate_validation=validation,
        patience=settings.patience, n_train=n_train, class_weight=class_weight, verbose=verbose,
        n_train_tokens=int(sum(len(ids) for ids in encoded["train"]["input_ids"])),
        progress_every=progress_every, examples_per_step=settings.batch_size)
    return model, fitted, validation.outputs_of(fitted.best_epoch, fitted.epochs_run)


def model_settings_of(context, prepared):
    """tfbert.json of a Keras 3 run's model/ folder."""
    from tfbert.model_settings import ModelSettings

    data, model_settings = context.config.data, context.config.model
    return ModelSettings(
        labels=list(prepared.label_names), max_length=data.max_length, truncation=data.truncation,
        word_tokenizer=model_settings.word_tokenizer, backend="keras",
        uses_token_type_ids="token_type_ids" in prepared.tokenizer.model_input_names,
        head_hidden_size=model_settings.head_hidden_size if model_settings.freeze_encoder else 0,
        text_pairs=prepared.corpus.has_text_pair,
    )


def export(context, prepared, results) -> Path:
    """experiment's export step for a Keras 3 run: model/ (renamed into place whole), then the SavedModel; returns
    the SavedModel's folder."""
    import keras

    from tfbert import keras_backend

    run = context.run
    staging = run.path / "model.partial"
    keras_backend.save(results.model, staging)
    prepared.tokenizer.save_pretrained(staging)
    model_settings_of(context, prepared).write(staging)
    staging.rename(run.model_dir)
    weights_in_graph = context.export_weights == "constants"
    text_pairs = prepared.corpus.has_text_pair  # predict_text_pair only for a model trained on pairs
    if keras.backend.backend() == "tensorflow":
        saved_model = export_folder(run.model_dir, run.saved_model_base, context.export_policy, weights_in_graph,
                                    text_pairs)
    else:  # the SavedModel traces the model in TensorFlow: Keras 3 on TensorFlow reads the same weights file
        saved_model = _export_in_tensorflow(run.model_dir, run.saved_model_base, context.export_policy,
                                            weights_in_graph, text_pairs)
    return saved_model


def export_folder(model_dir: Path, base_dir: Path, policy: str = "float32", weights_in_graph: bool = True,
                  text_pairs: bool = True) -> Path:
    """The next SavedModel version under ``base_dir`` from a Keras 3 model folder (model/ of a run), rebuilt afresh
    in the export's precision ``policy`` as the transformers path does.

    Example:
        >>> export_folder(Path("run/model"), Path("run/saved_model"))  # doctest: +SKIP
        PosixPath('run/saved_model/1')
    """
    import keras

    from tfbert import keras_backend
    from tfbert.export_keras import export_saved_model_keras
    from tfbert.model_settings import ModelSettings
    from tfbert.modeling import load_tokenizer

    settings = ModelSettings.read(model_dir)
    keras.mixed_precision.set_global_policy(policy)
    model = keras_backend.load(model_dir)
    return export_saved_model_keras(
        model, load_tokenizer(Path(model_dir), settings.word_tokenizer), id2label=dict(enumerate(settings.labels)),
        max_length=settings.max_length, base_dir=base_dir, truncation=settings.truncation,
        weights_in_graph=weights_in_graph, text_pairs=text_pairs)


def _export_in_tensorflow(model_dir: Path, base_dir: Path, policy: str, weights_in_graph: bool,
                          text_pairs: bool) -> Path:
    """:func:`export_folder` in a child process whose Keras 3 runs on TensorFlow (this one's runs on JAX)."""
    import json
    import os
    import subprocess

    code = ("import json, sys; import tfbert; from tfbert.keras_training import export_folder; "
            "print(export_folder(*json.loads(sys.argv[1])))")
    arguments = json.dumps([str(model_dir), str(base_dir), policy, weights_in_graph, text_pairs])
    completed = subprocess.run([sys.executable, "-c", code, arguments], capture_output=True, text=True,
                               env=dict(os.environ, KERAS_BACKEND="tensorflow", PYTHONPATH=os.pathsep.join(
                                   filter(None, [str(Path(__file__).resolve().parents[1]),
                                                 os.environ.get("PYTHONPATH")]))))
    if completed.returncode != 0:
        raise TfbertError(f"the SavedModel export (Keras 3 on TensorFlow, in a child process) failed: "
                          f"{(completed.stderr.strip().splitlines() or ['no message'])[-1][:300]}")
    return Path(completed.stdout.strip().splitlines()[-1])
