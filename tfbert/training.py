"""Optimiser and schedule, callbacks, and the fit that ends with the best epoch's weights.

Example:
    >>> learning_rate_at(step=50, peak=5e-5, warmup_steps=100, total_steps=1000)
    2.5e-05
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from tfbert import distribution
from tfbert.fit_callbacks import (MONITOR, FitResult, fit_result, progress_interval, step_progress,  # noqa: F401
                                   step_timer, validation_metrics)

logger = logging.getLogger(__name__)

NO_DECAY_ROLES = ("LayerNorm", "layer_norm", "LayerNormalization")
CHECKPOINT_DIR = "checkpoints"  # under the run folder: the best epoch's weights and the backups


def learning_rate_at(step: float, peak: float, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up from 0 to ``peak`` over ``warmup_steps``, then linear decay to 0 at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return peak * step / warmup_steps
    remaining = max(total_steps - warmup_steps, 1)
    return peak * max(0.0, (total_steps - step) / remaining)


def _schedule_class():
    import tensorflow as tf

    class LinearWarmupDecay(tf.keras.optimizers.schedules.LearningRateSchedule):
        """:func:`learning_rate_at` as a Keras schedule (the same formula in TF ops)."""

        def __init__(self, peak: float, warmup_steps: int, total_steps: int):
            self.peak, self.warmup_steps, self.total_steps = peak, warmup_steps, total_steps

        def __call__(self, step):
            step = tf.cast(step, tf.float32)
            warmup = tf.cast(self.warmup_steps, tf.float32)
            total = tf.cast(self.total_steps, tf.float32)
            rising = self.peak * step / tf.maximum(warmup, 1.0)
            falling = self.peak * tf.maximum(0.0, (total - step) / tf.maximum(total - warmup, 1.0))
            return tf.where(step < warmup, rising, falling)

        def get_config(self):
            return {"peak": self.peak, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps}

    return LinearWarmupDecay


def linear_warmup_decay(peak: float, warmup_steps: int, total_steps: int):
    """A Keras LearningRateSchedule computing :func:`learning_rate_at` for the optimizer's step."""
    return _schedule_class()(peak, warmup_steps, total_steps)


def excluded_from_decay(variables) -> list:
    """The variables AdamW must not decay: biases and LayerNorm scales/offsets, found by their role in the name."""
    excluded = []
    for variable in variables:
        name = variable.name
        if any(role in name for role in NO_DECAY_ROLES) or name.split("/")[-1].startswith("bias"):
            excluded.append(variable)
    return excluded


def _fused_adamw_class():
    import tensorflow as tf

    class FusedAdamW(tf.keras.optimizers.AdamW):
        """Keras' AdamW with each variable's update in fewer passes over memory, the same arithmetic:

        - TensorFlow's fused Adam kernel (ResourceApplyAdam): one pass over a variable and its two moments instead of
          ten elementwise ops, each a pass of its own;
        - the embeddings' sparse gradients made dense first: Keras' sparse update decays every row of both moments
          and moves every row of the variable anyway (Adam, not lazy Adam), in about ten passes over the word
          embeddings (half of MiniLM's weights), with copies of the variables its scatters force;
        - the weight decay as one pass, ``w * (1 - lr * decay)`` assigned (the variable adopts the product's
          buffer), just before the variable's own update (Keras: ``w - w * decay * lr``, two products and a
          subtraction in place, each a pass; it decays every variable before updating any: the same values);
        - the step's scalars (learning rate, decay factor, beta powers) computed once per update, not once per
          variable: about 1,000 fewer nodes of MiniLM's 7,000-node training step for the executor to run.
        amsgrad keeps Keras' update."""

        def apply_gradients(self, grads_and_vars, *args, **kwargs):
            self._forget_step_scalars()
            try:
                return super().apply_gradients(grads_and_vars, *args, **kwargs)
            finally:
                self._forget_step_scalars()

        @tf.__internal__.tracking.no_automatic_dependency_tracking  # a plain dict, not a checkpointed one
        def _forget_step_scalars(self):
            self._step_scalars = {}  # filled by the first update_step of each graph, device and dtype

        def _apply_weight_decay(self, variables):
            pass  # in update_step

        def _scalars(self, variable) -> dict:
            """This update's scalars for ``variable``'s dtype, made once per graph and device: under a strategy each
            device updates its own copy, and with XLA each variable's update is a graph of its own."""
            cache = getattr(self, "_step_scalars", {})  # {}: update_step called outside apply_gradients
            dtype = variable.dtype
            key = (tf.compat.v1.get_default_graph(), variable.device, dtype)
            if key not in cache:
                learning_rate = tf.cast(self.learning_rate, dtype)
                step = tf.cast(self.iterations + 1, dtype)
                beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
                cache[key] = {
                    "learning_rate": learning_rate, "beta_1": beta_1, "beta_2": beta_2,
                    "kept": 1 - learning_rate * tf.cast(self.weight_decay or 0.0, dtype),
                    "beta_1_power": tf.pow(beta_1, step), "beta_2_power": tf.pow(beta_2, step),
                    "epsilon": tf.cast(self.epsilon, dtype),
                }
            return cache[key]

        def update_step(self, gradient, variable):
            scalars = self._scalars(variable)
            if self.weight_decay and self._use_weight_decay(variable):
                variable.assign(variable * scalars["kept"], read_value=False)
            if self.amsgrad:
                return super().update_step(gradient, variable)
            if isinstance(gradient, tf.IndexedSlices):
                gradient = tf.convert_to_tensor(gradient)  # Keras summed repeated rows already
            slot = self._index_dict[self._var_key(variable)]
            tf.raw_ops.ResourceApplyAdam(
                var=variable.handle, m=self._momentums[slot].handle, v=self._velocities[slot].handle,
                beta1_power=scalars["beta_1_power"], beta2_power=scalars["beta_2_power"],
                lr=scalars["learning_rate"], beta1=scalars["beta_1"], beta2=scalars["beta_2"],
                epsilon=scalars["epsilon"], grad=gradient, use_locking=False)

    return FusedAdamW


def make_optimizer(model, lr: float, weight_decay: float, warmup_steps: int, total_steps: int):
    """AdamW (:func:`_fused_adamw_class`) with linear warm-up and decay; no decay on LayerNorm and bias."""
    optimizer = _fused_adamw_class()(
        learning_rate=linear_warmup_decay(lr, warmup_steps, total_steps),
        weight_decay=weight_decay,
        epsilon=1e-8,
        global_clipnorm=1.0,  # as the Hugging Face Trainer (max_grad_norm=1.0)
    )
    excluded = excluded_from_decay(model.trainable_variables)
    optimizer.exclude_from_weight_decay(var_list=excluded)
    logger.info(
        "AdamW: weight decay on %d variables, none on %d (LayerNorm, bias)",
        len(model.trainable_variables) - len(excluded),
        len(excluded),
    )
    return optimizer


def classification_loss(labels, logits):
    """Sparse cross-entropy on float32 logits, whatever the compute precision."""
    import tensorflow as tf

    return tf.keras.losses.sparse_categorical_crossentropy(labels, tf.cast(logits, tf.float32), from_logits=True)


def balanced_class_weight(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """scikit-learn's 'balanced' weights, n_samples / (n_classes * count), as Keras wants them."""
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    result = {i: 1.0 for i in range(num_classes)}
    result.update({int(c): float(w) for c, w in zip(present, weights)})
    return result


def accumulate_gradients(model, micro_batches: int) -> None:
    """Make ``model.fit`` split each batch into ``micro_batches`` parts run one after another, summing
    their gradients into one optimizer update: the update of the whole batch, the memory of one part.

    The loss is summed per example and divided by the whole batch's size, so the update equals the
    unsplit one (up to float rounding) even when the parts differ in size. Under a strategy the batch here
    is a replica's share and the replicas' gradients are summed, so dividing by share x replicas gives the
    global batch's mean, as Keras' own loss scaling does (exact when --batch_size splits evenly).
    """
    import types

    import tensorflow as tf

    def train_step(self, data):
        x, y, sample_weight = tf.keras.utils.unpack_x_y_sample_weight(data)
        variables = self.trainable_variables
        batch = tf.shape(y)[0]
        part = (batch + micro_batches - 1) // micro_batches
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        scaling = isinstance(self.optimizer, tf.keras.mixed_precision.LossScaleOptimizer)

        def run_part(start, totals, logits_parts):
            def take(tensor):
                return tensor[start:start + part]

            weights = take(sample_weight) if sample_weight is not None else None
            with tf.GradientTape() as tape:
                logits = self(tf.nest.map_structure(take, x), training=True).logits
                per_example = self.loss(take(y), logits)
                if weights is not None:
                    per_example = per_example * tf.cast(weights, per_example.dtype)
                loss = tf.reduce_sum(per_example) / tf.cast(batch * replicas, per_example.dtype)
                if scaling:
                    loss = self.optimizer.get_scaled_loss(loss)
            grads = tape.gradient(loss, variables)
            totals = [total + tf.convert_to_tensor(grad) for total, grad in zip(totals, grads)]
            return start + part, totals, logits_parts.write(start // part, tf.cast(logits, tf.float32))

        zeros = [tf.zeros_like(variable) for variable in variables]
        logits_parts = tf.TensorArray(tf.float32, size=0, dynamic_size=True, infer_shape=False,
                                      element_shape=tf.TensorShape([None, self.config.num_labels]))
        _, grads, logits_parts = tf.while_loop(
            lambda start, *_: start < batch, run_part, (tf.constant(0), zeros, logits_parts),
            parallel_iterations=1,  # one part at a time: that is the memory saving
        )
        if scaling:
            grads = self.optimizer.get_unscaled_gradients(grads)
        self.optimizer.apply_gradients(zip(grads, variables))
        logits = logits_parts.concat()
        self.compiled_loss(y, logits, sample_weight)  # the epoch's mean loss, as Keras reports it
        self.compiled_metrics.update_state(y, logits, sample_weight)
        return {metric.name: metric.result() for metric in self.metrics}

    if micro_batches > 1:
        model.train_step = types.MethodType(train_step, model)


def trace_steps_once(model) -> None:
    """Make the first ``fit`` step and ``predict`` call trace their function once, and without AutoGraph.

    tf.function traces a function twice when its first trace creates variables (AdamW's slots, Keras' metric
    variables built on first use): here they exist before. AutoGraph rewrites the source of every layer call, which
    none of these functions needs: transformers' layers branch on Python values, and the steps' loops
    (gradient accumulation) are tf.while_loop already. Call after ``compile`` (which resets the functions), under
    the strategy's scope, with ``steps_per_execution`` 1 (its loop would need AutoGraph).
    """
    import tensorflow as tf

    model.optimizer.build(model.trainable_variables)
    for kind in ("train", "predict"):
        keras_function = getattr(model, f"make_{kind}_function")()  # a tf.function with AutoGraph, not yet traced
        setattr(model, f"{kind}_function",
                tf.function(keras_function.python_function, reduce_retracing=True, autograph=False))


def weights_checkpoint(model):
    """A tf.train.Checkpoint of ``model``'s weights without its optimizer's state, under the names the model's own
    checkpoint gives them (``model.load_weights`` reads it; TensorFlow's format restores under MirroredStrategy)."""
    import tensorflow as tf

    return tf.train.Checkpoint(**{name: child for name, child in model._trackable_children().items()
                                  if name != "optimizer"})


def _best_checkpoint_class():
    import tensorflow as tf

    class BestCheckpoint(tf.keras.callbacks.ModelCheckpoint):
        """ModelCheckpoint writing the best epoch's weights only (:func:`weights_checkpoint`): a third of the bytes,
        as AdamW keeps two moments per weight; the backups hold the whole training state."""

        # tf_keras' ModelCheckpoint writes here; its model.save_weights would add the optimizer's variables.
        def _save_handler(self, filepath):
            weights_checkpoint(self.model).write(filepath, options=self._options)

    return BestCheckpoint


def _warms_up_beside_steps(model) -> bool:
    """Whether the validation's warm-up may run beside the training steps: on CPUs only, outside a cluster (its
    collectives take one function at a time; an accelerator's memory may be sized for the steps alone)."""
    import tensorflow as tf

    return not (distribution.in_multi_worker_mode(model.distribute_strategy)
                or tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))


def _best_weights_class():
    import tensorflow as tf

    class BestWeights(tf.keras.callbacks.Callback):
        """The best epoch's weights by validation macro-F1, kept in memory (ModelCheckpoint's rule: strictly
        greater), for a cluster's non-chief workers, whose checkpoint file Keras writes to a temporary folder
        and deletes."""

        def __init__(self, monitor: str = MONITOR):
            super().__init__()
            self.best, self.weights, self.monitor = -math.inf, None, monitor

        def on_epoch_end(self, epoch, logs=None):
            if logs and logs.get(self.monitor, -math.inf) > self.best:
                self.best, self.weights = logs[self.monitor], self.model.get_weights()

    return BestWeights


def progress_mode(settings, steps_per_epoch: int, terminal: bool) -> tuple[int, int]:
    """Keras' verbosity and the steps between progress lines (0: none) for ``settings`` (TrainingConfig): a bar
    on a terminal; elsewhere a line per epoch and lines within it, as a redrawn bar is unreadable in a log;
    nothing with --quiet or --json (stdout carries the summary object only).

    Example:
        >>> progress_mode(TrainingConfig(), 300, terminal=False)  # doctest: +SKIP
        (2, 20)
    """
    if settings.quiet or settings.json:
        return 0, 0
    if terminal:
        return 1, 0
    return 2, progress_interval(steps_per_epoch, settings.log_every)


def fit(
    model,
    train_data,
    *,
    epochs: int,
    evaluate_validation: Callable[[], dict],
    run_dir: Path,
    patience: int,
    class_weight: Optional[dict[int, float]] = None,
    n_train: int,
    steps_per_epoch: int,
    n_train_tokens: int = 0,
    verbose: int = 1,
    progress_every: int = 0,
    examples_per_step: int = 0,
    save_every: int = 0,
    backup_run_dir: Optional[Path] = None,
    monitor: str = MONITOR,
    warm_up_validation: Optional[Callable[[], None]] = None,
) -> FitResult:
    """Train with validation macro-F1 monitoring, best checkpoint, early stopping, CSV and TensorBoard logs, and
    backups of the training state (every ``save_every`` steps, at epoch ends and on SIGTERM/SIGINT, which raise
    :class:`tfbert.backup.RunInterrupted`); a run folder holding a backup continues from it.

    ``verbose`` as Keras' (1: a bar for terminals, 2: a line per epoch); ``progress_every`` > 0 adds a log
    line every that many steps (:func:`step_progress`). At the end the model holds the weights of the best
    epoch by validation macro-F1. ``warm_up_validation`` (ValidationPasses.warm_up) runs beside the first epoch's
    steps on CPUs (:func:`tfbert.fit_callbacks.validation_metrics`). Backups go under ``backup_run_dir`` (default
    ``run_dir``): on a cluster, the chief's run folder, which Keras' BackupAndRestore reads on every worker and only
    the chief writes to.
    """
    import time

    import tensorflow as tf

    from tfbert.backup import BACKUP_DIR, StopRequest, read_backup, training_backup, write_log_csv

    # TensorFlow's checkpoint format: unlike .h5, it restores under MirroredStrategy.
    checkpoint = run_dir / CHECKPOINT_DIR / "best"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    backups = (backup_run_dir or run_dir) / CHECKPOINT_DIR / BACKUP_DIR
    restored = read_backup(backups)
    if restored:
        # Keras restores the epoch and step but starts a new iterator over the data: skipping the batches
        # already trained on continues the seeded stream (shuffle, buckets, repeat) where it stopped.
        train_data = train_data.skip(restored.batches_done(steps_per_epoch))
        write_log_csv(run_dir / "log.csv", restored.callbacks.get("epoch_logs", []))  # the backup's epochs, once
    timer = step_timer()
    best = _best_checkpoint_class()(
        str(checkpoint), monitor=monitor, mode="max", save_best_only=True, save_weights_only=True)
    early = tf.keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=patience) if patience else None
    callbacks = [
        timer,
        validation_metrics(evaluate_validation, warm_up=warm_up_validation if _warms_up_beside_steps(model) else None),
        best,
        tf.keras.callbacks.CSVLogger(str(run_dir / "log.csv"), append=True),
        tf.keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard"), write_graph=False, profile_batch=0),
    ]
    if progress_every:
        callbacks.append(step_progress(steps_per_epoch, examples_per_step, progress_every))
    # Every worker of a cluster creates the same callbacks (backups too: Keras' BackupAndRestore must exist on all).
    keeper = None if distribution.is_chief(model.distribute_strategy) else _best_weights_class()(monitor)
    callbacks += [keeper] if keeper else []
    callbacks += [early] if early else []
    stop = StopRequest()
    backup = training_backup(backups, steps_per_epoch, stop, save_every, early, best)
    callbacks.append(backup)  # last: see training_backup
    started = time.perf_counter()
    if restored and restored.training_done(steps_per_epoch, epochs):
        backup.epoch_logs = restored.callbacks.get("epoch_logs", [])  # died after training: nothing to redo
    else:
        with stop:
            model.fit(train_data, epochs=epochs, steps_per_epoch=steps_per_epoch, callbacks=callbacks,
                      class_weight=class_weight, verbose=verbose)
    seconds = time.perf_counter() - started
    if keeper:
        model.set_weights(keeper.weights)
    else:
        model.load_weights(str(checkpoint)).expect_partial()
    return fit_result(backup.epoch_logs, timer, seconds, n_train, n_train_tokens, monitor)
