"""Callbacks both model layers train with (Keras 2 for transformers, Keras 3 for keras-hub), and the fit's result.

Each factory takes the Keras whose ``callbacks.Callback`` it subclasses: ``tf.keras`` (tf_keras, the default) or
Keras 3's ``keras``; the two have the same callback hooks but their ``fit`` accepts only its own classes.

Example:
    >>> import keras
    >>> callbacks = [step_timer(keras), validation_metrics(lambda: {...}, keras)]  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

logger = logging.getLogger(__name__)

MONITOR = "val_macro_f1"
# logged as val_<key> where the task has it (single-label, multi-label, regression)
VALIDATION_KEYS = ("loss", "accuracy", "macro_f1", "weighted_f1", "micro_f1", "subset_accuracy", "mae", "pearson",
                   "spearman")
PROGRESS_LINES_PER_EPOCH = 15


def _keras(keras_module):
    if keras_module is None:
        import tensorflow as tf

        return tf.keras
    return keras_module


def validation_metrics(evaluate: Callable[[], dict], keras_module=None, warm_up: Optional[Callable[[], None]] = None):
    """A callback adding val_loss, val_accuracy, val_macro_f1 and val_weighted_f1 to each epoch's logs, from one
    prediction pass (``evaluate``). Put it before the callbacks that read them (checkpoint, early stopping, CSV).

    ``warm_up`` (the first pass's one-time work: tracing and optimising the prediction function, compiling kernels)
    runs in a thread from the end of the first step, beside the steady steps, which leave the CPU idle between
    kernels; during the first step it would contend with that step's tracing for the interpreter. The epoch's
    pass waits for it.

    Example:
        >>> model.fit(data, callbacks=[validation_metrics(lambda: split_metrics(model, ...))])  # doctest: +SKIP
    """

    class ValidationMetrics(_keras(keras_module).callbacks.Callback):
        warming = None

        def on_train_batch_end(self, batch, logs=None):
            if warm_up is not None and self.warming is None:
                self.warming = threading.Thread(target=_warm_up, args=(warm_up,), name="validation-warm-up")
                self.warming.start()

        def on_epoch_end(self, epoch, logs=None):
            if self.warming is not None:
                self.warming.join()
            metrics = evaluate()
            if logs is not None:
                logs.update({f"val_{key}": metrics[key] for key in VALIDATION_KEYS if key in metrics})

    return ValidationMetrics()


def _warm_up(work: Callable[[], None]) -> None:
    try:
        work()
    except Exception as error:  # the epoch's own pass meets the same error and reports it
        logger.debug("validation warm-up failed: %s", error)


def step_timer(keras_module=None):
    """A callback timing the first training step (tracing, compiling) and the training steps in all.

    Example:
        >>> timer = step_timer(); model.fit(data, callbacks=[timer]); timer.seconds  # doctest: +SKIP
        12.3
    """

    class StepTimer(_keras(keras_module).callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.first_step = self.steps = self.seconds = 0.0
            self._started = None

        def on_train_batch_begin(self, batch, logs=None):
            self._started = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            elapsed = time.perf_counter() - self._started
            if self.steps == 0:
                self.first_step = elapsed
            self.steps += 1
            self.seconds += elapsed

    return StepTimer()


def epoch_logs(keras_module=None):
    """A callback keeping every epoch's logs as plain floats in ``.epoch_logs``; put it last.

    Example:
        >>> keeper = epoch_logs(keras)
        >>> model.fit(data, callbacks=[..., keeper]); keeper.epoch_logs[0]["loss"]  # doctest: +SKIP
    """

    class EpochLogs(_keras(keras_module).callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epoch_logs: list[dict] = []

        def on_epoch_end(self, epoch, logs=None):
            self.epoch_logs.append({key: float(value) for key, value in (logs or {}).items()})

    return EpochLogs()


def progress_interval(steps_per_epoch: int, every: int = 0) -> int:
    """Steps between two progress lines: ``every`` if given, else enough for ~15 lines per epoch.

    Example:
        >>> progress_interval(1000), progress_interval(7), progress_interval(1000, every=50)
        (67, 1, 50)
    """
    return every or max(1, round(steps_per_epoch / PROGRESS_LINES_PER_EPOCH))


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def step_progress(steps_per_epoch: int, examples_per_step: int, every: int, write: Callable[[str], None] = logger.info,
                  keras_module=None):
    """A Keras callback writing a line every ``every`` steps (and at each epoch's last): the epoch, step/steps,
    examples/s and the epoch's ETA. For output that is not a terminal, where Keras' bar cannot redraw.

    Example:
        >>> model.fit(data, steps_per_epoch=150, callbacks=[step_progress(150, 32, every=10)])  # doctest: +SKIP
        epoch 1/3 · step 10/150 · 412.5 examples/s · ETA 0:11
    """

    class StepProgress(_keras(keras_module).callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch, self.started = epoch + 1, time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            step = batch + 1
            if step % every and step != steps_per_epoch:
                return
            elapsed = max(time.perf_counter() - self.started, 1e-9)
            eta = elapsed / step * (steps_per_epoch - step)
            write(f"epoch {self.epoch}/{self.params.get('epochs', '?')} · step {step}/{steps_per_epoch} · "
                  f"{step * examples_per_step / elapsed:.1f} examples/s · ETA {_clock(eta)}")

    return StepProgress()


@dataclass
class FitResult:
    history: dict
    best_epoch: int
    epochs_run: int
    train_seconds: float
    train_examples_per_second: float
    steady_examples_per_second: float  # after the first step, which traces and compiles the graph
    steady_tokens_per_second: float


def fit_result(logs: list[dict], timer, seconds: float, n_train: int, n_train_tokens: int,
               monitor: str = MONITOR) -> FitResult:
    """The FitResult of a fit whose epochs logged ``logs`` and whose steps ``timer`` (:func:`step_timer`) timed.

    The best epoch is the first with the highest ``monitor`` (the checkpoint's rule: strictly greater).
    Steady-state rates leave out the first step, whose time is mostly tracing and compilation.
    """
    import numpy as np

    history = {key: [entry.get(key, math.nan) for entry in logs] for key in logs[0]}
    scores = history[monitor]
    epochs_run = len(scores)
    steady_seconds = timer.seconds - timer.first_step
    steady_share = (timer.steps - 1) / timer.steps if timer.steps > 1 else math.nan

    def steady_rate(amount: float) -> float:
        return amount * epochs_run * steady_share / steady_seconds if steady_seconds > 0 else math.nan

    return FitResult(
        history=history,
        best_epoch=int(np.argmax(scores)) + 1,
        epochs_run=epochs_run,
        train_seconds=seconds,
        train_examples_per_second=n_train * epochs_run / seconds if seconds else math.nan,
        steady_examples_per_second=steady_rate(n_train),
        steady_tokens_per_second=steady_rate(n_train_tokens),
    )
