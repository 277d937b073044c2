"""Which model layer trains a run: Keras 3 (keras-hub) or transformers' TF classes (Keras 2), and why.

``--backend keras`` asks for Keras 3 and fails with one line where keras-hub cannot build the checkpoint;
``--backend transformers`` keeps today's path; ``--backend auto`` takes Keras 3 for the families keras-hub covers
only once :data:`AUTO_PREFERS_KERAS` says the benchmark found it at least as accurate and as fast, and
transformers otherwise. The run's config.json records the choice and its reason.

Example:
    >>> from tfbert.backends import resolve
    >>> resolve("auto", "/models/electra-small")  # doctest: +SKIP
    Backend(name='transformers', reason='auto: keras-hub cannot build it (electra: no keras-hub converter)')
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from tfbert.errors import TfbertError

# What --backend auto picks for the families keras-hub covers. False until docs/benchmarks.md shows the Keras 3
# backend's test macro-F1 within 0.005 of the transformers backend's and its training and serving as fast.
AUTO_PREFERS_KERAS = False
KERAS = "keras"
TRANSFORMERS = "transformers"


@dataclass(frozen=True)
class Backend:
    """The model layer a run trains with (keras | transformers) and the reason it was chosen."""

    name: str
    reason: str

    @property
    def is_keras(self) -> bool:
        return self.name == KERAS

    def describe(self) -> dict:
        """config.json's record of the choice.

        Example:
            >>> Backend("transformers", "--backend transformers").describe()
            {'backend': 'transformers', 'backend_reason': '--backend transformers'}
        """
        return {"backend": self.name, "backend_reason": self.reason}


def keras_unsupported(checkpoint: Union[str, Path]) -> str | None:
    """None when the Keras 3 backend can build ``checkpoint``, else why not (family, position embeddings, weights).

    keras-hub's converters read PyTorch-layout safetensors: a local folder holding only tf_model.h5 cannot load.

    Example:
        >>> keras_unsupported("/models/tiny-bert-tf-only")  # doctest: +SKIP
        'no model.safetensors (keras-hub reads PyTorch-layout safetensors, not tf_model.h5)'
    """
    from tfbert.keras_backend import supports
    from tfbert.keras_checkpoint import SAFETENSORS_FILE, SAFETENSORS_INDEX_FILE

    reason = supports(checkpoint)
    folder = Path(checkpoint)
    if reason is None and folder.is_dir() and not any((folder / name).is_file()
                                                      for name in (SAFETENSORS_FILE, SAFETENSORS_INDEX_FILE)):
        reason = f"no {SAFETENSORS_FILE} (keras-hub reads PyTorch-layout safetensors, not tf_model.h5)"
    return reason


def resolve(requested: str, checkpoint: Union[str, Path]) -> Backend:
    """The backend of a run asking for ``requested`` (auto | keras | transformers) on ``checkpoint``.

    Raises:
        TfbertError: ``--backend keras`` on a checkpoint keras-hub cannot build.

    Example:
        >>> resolve("transformers", "/any/model").name
        'transformers'
    """
    if requested == TRANSFORMERS:
        return Backend(TRANSFORMERS, "--backend transformers")
    reason = keras_unsupported(checkpoint)
    if requested == KERAS:
        if reason:
            raise TfbertError(f"--backend keras: the Keras 3 backend cannot build {checkpoint} ({reason}); "
                              "use --backend transformers (or auto)")
        return Backend(KERAS, "--backend keras")
    if reason:
        return Backend(TRANSFORMERS, f"auto: keras-hub cannot build it ({reason})")
    if AUTO_PREFERS_KERAS:
        return Backend(KERAS, "auto: keras-hub covers this family and the benchmark found Keras 3 as good")
    return Backend(TRANSFORMERS, "auto: keras-hub covers this family, but transformers stays the default until the "
                                 "benchmark shows Keras 3 at least as accurate and as fast")


def for_run(config, checkpoint: Union[str, Path], task: str = "single_label") -> Backend:
    """The backend of a run with ``config`` (a TrainConfig): :func:`resolve`; for Keras 3, the flags it cannot
    honour refused (when auto chose it: --backend keras was checked with the other flags) and Keras' own backend
    (tensorflow | jax) selected before keras loads.

    Example:
        >>> for_run(TrainConfig(), "/models/electra-small").reason  # doctest: +SKIP
        'auto: keras-hub cannot build it (electra: no keras-hub converter)'
    """
    if task != "single_label" and config.model.backend == "auto":  # the Keras 3 head is single-label only
        return Backend(TRANSFORMERS, f"auto: the data is {task}, which the Keras 3 backend does not train yet")
    if config.data.long_text == "window" and config.model.backend == "auto":
        return Backend(TRANSFORMERS, "auto: --long_text window, which the Keras 3 backend does not read yet")
    backend = resolve(config.model.backend, checkpoint)
    if backend.is_keras:
        problems = keras_problems(config) + ([f"the data is {task}; the Keras 3 backend trains single-label "
                                              "tasks only, use --backend transformers"] if task != "single_label"
                                             else [])
        if problems:
            raise TfbertError(f"{backend.reason}: " + "; ".join(problems))
        select_keras_backend(config.model.keras_backend)
    return backend


def keras_problems(config) -> list[str]:
    """The flags of ``config`` (a TrainConfig) that the Keras 3 backend cannot honour, one message each."""
    training, model = config.training, config.model
    checks = [
        (training.resume, "--resume works with --backend transformers only (Keras 3 runs keep no backups yet)"),
        (training.save_every, "--save_every works with --backend transformers only (Keras 3 runs keep no backups yet)"),
        (config.data.long_text == "window", "--long_text window works with --backend transformers only"),
        (training.strategy in ("multi_worker", "tpu"),
         f"--strategy {training.strategy} is not wired for --backend keras; use auto, default or mirrored"),
        (model.keras_backend == "jax" and training.export_tflite == "on",
         "--export_tflite needs --keras_backend tensorflow (the compact export traces the model in TensorFlow)"),
        (model.keras_backend == "jax" and training.strategy not in ("auto", "default"),
         f"--keras_backend jax trains on one device; --strategy {training.strategy} needs --keras_backend tensorflow"),
        (model.keras_backend == "jax" and importlib.util.find_spec("jax") is None,
         "--keras_backend jax: JAX is not installed (pip install jax), or use --keras_backend tensorflow"),
    ]
    return [message for failed, message in checks if failed]


def select_keras_backend(name: str) -> None:
    """Make Keras 3 run on ``name`` (tensorflow | jax): KERAS_BACKEND must be set before keras is imported.

    Raises:
        TfbertError: keras is already loaded on another backend in this process.

    Example:
        >>> select_keras_backend("tensorflow")
    """
    if "keras" in sys.modules:
        import keras

        if keras.backend.backend() != name:
            raise TfbertError(f"--keras_backend {name}: Keras 3 is already running on {keras.backend.backend()} in "
                              f"this process; start a new one (or set KERAS_BACKEND={name} before it starts)")
        return
    os.environ["KERAS_BACKEND"] = name
