"""Keras 3 AdamW for the keras-hub classifier: tfbert's warm-up/decay schedule, no decay on LayerNorm and bias.

The schedule is :func:`tfbert.training.learning_rate_at` (the Keras 2 path's formula) written in keras.ops;
the variables spared weight decay are found by their role (a LayerNormalization's scale and offset, any
bias), as in :func:`tfbert.training.excluded_from_decay`.

Example:
    >>> from tfbert.keras_optimizer import make_optimizer
    >>> optimizer = make_optimizer(model, lr=5e-5, weight_decay=0.01, warmup_steps=100,
    ...                            total_steps=1000)  # doctest: +SKIP
    >>> loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    >>> model.compile(optimizer=optimizer, loss=loss)  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import logging

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=None)
def _schedule_class():
    import keras

    @keras.saving.register_keras_serializable(package="tfbert")
    class LinearWarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
        """:func:`tfbert.training.learning_rate_at` as a Keras 3 schedule of the optimizer's step.

        With gradient accumulation Keras 3 calls the schedule with its count of micro-batches: dividing it by
        ``accumulation_steps`` gives the number of updates, the step the schedule is written in.
        """

        def __init__(self, peak: float, warmup_steps: int, total_steps: int, accumulation_steps: int = 1):
            self.peak, self.warmup_steps, self.total_steps = float(peak), int(warmup_steps), int(total_steps)
            self.accumulation_steps = int(accumulation_steps)

        def __call__(self, step):
            from keras import ops

            step = ops.cast(ops.floor_divide(step, self.accumulation_steps), "float32")
            warmup = float(self.warmup_steps)
            rising = self.peak * step / max(warmup, 1.0)
            falling = self.peak * ops.maximum(0.0, (self.total_steps - step) / max(self.total_steps - warmup, 1.0))
            return ops.where(step < warmup, rising, falling)

        def get_config(self):
            return {"peak": self.peak, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps,
                    "accumulation_steps": self.accumulation_steps}

    return LinearWarmupDecay


def linear_warmup_decay(peak: float, warmup_steps: int, total_steps: int, accumulation_steps: int = 1):
    """A Keras 3 LearningRateSchedule: linear warm-up to ``peak``, then linear decay to 0 at ``total_steps``
    (steps counted in optimizer updates; ``accumulation_steps`` micro-batches make one update).

    Example:
        >>> float(linear_warmup_decay(5e-5, 100, 1000)(50))  # doctest: +SKIP
        2.5e-05
    """
    return _schedule_class()(peak, warmup_steps, total_steps, accumulation_steps)


def decay_exempt_variables(model) -> list:
    """The trainable variables AdamW must not decay: LayerNorm scales and offsets, and every bias.

    Found by the layer that owns them, not by name: Keras 3 names variables ``gamma``, ``beta``, ``bias``
    without their layer, so a name test like transformers' "LayerNorm.weight" would match nothing.

    Example:
        >>> len(decay_exempt_variables(model))  # doctest: +SKIP
        24
    """
    import keras

    trainable = {id(variable) for variable in model.trainable_variables}
    exempt, seen = [], set()
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.LayerNormalization):
            owned = list(layer.weights)
        else:
            bias = getattr(layer, "bias", None)
            owned = [bias] if isinstance(bias, keras.Variable) else []
        for variable in owned:
            if id(variable) in trainable and id(variable) not in seen:
                seen.add(id(variable))
                exempt.append(variable)
    return exempt


def make_optimizer(model, lr: float, weight_decay: float, warmup_steps: int, total_steps: int,
                   accumulation_steps: int = 1):
    """Keras 3 AdamW with tfbert's schedule and clipping; no weight decay on LayerNorm and bias.

    Args:
        model: the classifier whose trainable variables the optimizer will update (build it first).
        lr: the peak learning rate, reached after ``warmup_steps``.
        weight_decay: decoupled weight decay on the remaining variables.
        warmup_steps, total_steps: the schedule, in optimizer updates.
        accumulation_steps: batches whose mean gradient makes one update (Keras 3's gradient accumulation).

    Example:
        >>> optimizer = make_optimizer(model, 5e-5, 0.01, warmup_steps=10, total_steps=100)  # doctest: +SKIP
    """
    import keras

    optimizer = keras.optimizers.AdamW(
        learning_rate=linear_warmup_decay(lr, warmup_steps, total_steps, accumulation_steps),
        weight_decay=weight_decay,
        epsilon=1e-8,
        global_clipnorm=1.0,  # as the Hugging Face Trainer (max_grad_norm=1.0) and the Keras 2 path
        gradient_accumulation_steps=accumulation_steps if accumulation_steps > 1 else None,  # Keras wants >= 2
    )
    exempt = decay_exempt_variables(model)
    optimizer.exclude_from_weight_decay(var_list=exempt)
    logger.info("AdamW: weight decay on %d variables, none on %d (LayerNorm, bias)",
                len(model.trainable_variables) - len(exempt), len(exempt))
    return optimizer
