"""Process setup: environment before TensorFlow is imported, devices, strategy, precision, seeds.

Call :func:`prepare_process` before anything imports TensorFlow or transformers.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys

logger = logging.getLogger(__name__)

# transformers' TF classes need Keras 2 (tf-keras); PyTorch is never needed.
_ENVIRONMENT = {
    "TF_USE_LEGACY_KERAS": "1",
    "USE_TORCH": "0",
    "USE_TF": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "TOKENIZERS_PARALLELISM": "false",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}


# What transformers and datasets read at import time for quiet_libraries' settings.
_QUIET_ENVIRONMENT = {"TRANSFORMERS_VERBOSITY": "error", "DATASETS_VERBOSITY": "error",
                      "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}


def prepare_process() -> None:
    """Set the environment variables TensorFlow and transformers read at import time.

    Example:
        >>> from tfbert.runtime import prepare_process
        >>> prepare_process()
        >>> import tensorflow as tf  # now with tf-keras and without PyTorch
    """
    for key, value in _ENVIRONMENT.items():
        os.environ.setdefault(key, value)


prepare_process()


def cpu_supports_bfloat16(cpuinfo_path: str = "/proc/cpuinfo") -> bool:
    """True when the CPU has native bf16 instructions (AVX-512 BF16 or AMX), where oneDNN runs bf16 fast."""
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as f:
            flags = f.read()
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def resolve_precision(requested: str) -> str:
    """Map --precision to a Keras mixed-precision policy name.

    auto: mixed_bfloat16 on bf16-capable GPUs (compute capability 8.0+) and CPUs,
    mixed_float16 on older GPUs, float32 otherwise.

    Example:
        >>> resolve_precision("float32")
        'float32'
    """
    explicit = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
    if requested in explicit:
        return explicit[requested]
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        major, _minor = details.get("compute_capability", (0, 0))
        return "mixed_bfloat16" if major >= 8 else "mixed_float16"
    return "mixed_bfloat16" if cpu_supports_bfloat16() else "float32"


def resolve_export_precision(requested: str, training_policy: str) -> str:
    """--export_precision as a Keras policy; auto exports bfloat16 after bfloat16 training, else float32.

    float16 is never exported: CPUs emulate it, and GPUs serve float32 or bfloat16 well.

    Example:
        >>> resolve_export_precision("auto", "mixed_bfloat16")
        'mixed_bfloat16'
    """
    if requested == "bfloat16" or (requested == "auto" and training_policy == "mixed_bfloat16"):
        return "mixed_bfloat16"
    return "float32"


def resolve_export_weights(requested: str) -> str:
    """--export_weights: constants or variables; auto: variables, in the precision the export computes with.

    MiniLM in bfloat16 on 2 cores (SMS Spam, 2026-12-07): constants answered one text in ~10 instead of ~12 ms and
    batches of 32 ~10 % faster (not where oneDNN keeps variables' layout: import_tensorflow(frozen_weights=True));
    variables held serve.py at 0.87 instead of 1.9-2.0 GiB, the export's peak at 1.3 instead of 2.0 GiB, and cold
    infer.py took 3.75 instead of 4.63 s. In float32 constants bought 7 % more texts/s for 1.8 GiB and ~4 s more.

    Example:
        >>> resolve_export_weights("auto")
        'variables'
    """
    return requested if requested in ("constants", "variables") else "variables"


def resolve_compact_export(requested: str | bool, keras_backend: str = "tensorflow") -> bool:
    """--export_tflite: whether the run writes the compact export; auto: yes, unless Keras 3 runs on JAX (the
    conversion traces the model in TensorFlow). True and False are on and off (config.json of runs before auto).

    It costs a run ~10 s of conversion for MiniLM and a pass over the test split, and 22 MiB; it gives infer.py's
    first answer in ~0.3 s instead of ~5 s (docs/compact_export.md).

    Example:
        >>> resolve_compact_export("auto", "jax")
        False
    """
    requested = {True: "on", False: "off"}.get(requested, requested)
    return requested == "on" or (requested == "auto" and keras_backend != "jax")


def use_fused_ops(requested: str) -> bool:
    """--fused_ops: on, off, or auto = on when no GPU is visible (the passes it saves are a CPU cost)."""
    if requested in ("on", "off"):
        return requested == "on"
    import tensorflow as tf

    return not tf.config.list_physical_devices("GPU")


def set_precision(policy_name: str) -> None:
    """Set the global Keras policy; models built afterwards compute in it, variables stay float32."""
    import tensorflow as tf

    tf.keras.mixed_precision.set_global_policy(policy_name)
    logger.info("precision policy: %s", policy_name)


def set_seed(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy, TensorFlow and Keras; with ``deterministic``, also make TensorFlow's ops deterministic.

    Keras draws the seeds of unseeded initializers (every transformers head) from its own generator,
    which only ``tf.keras.utils.set_random_seed`` sets; ``tf.random.set_seed`` alone leaves them random.
    """
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    tf.random.set_global_generator(tf.random.Generator.from_seed(seed))  # every dropout's; backed up with a run
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def strategy_for(devices: list[str]):
    """MirroredStrategy over ``devices`` when there are several, else the default (single-device) strategy."""
    import tensorflow as tf

    if len(devices) > 1:
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.get_strategy()


def select_strategy(requested: str = "auto", tpu: str = ""):
    """The strategy of ``--strategy`` (see :func:`tfbert.distribution.select_strategy`).

    Example:
        >>> strategy = select_strategy()
        >>> with strategy.scope():
        ...     pass  # build and compile the model here
    """
    from tfbert.distribution import select_strategy as select

    return select(requested, tpu)


def quiet_libraries() -> None:
    """Silence transformers' and TensorFlow's advisory chatter; keep errors.

    Imports none of them: libraries not yet imported read their verbosity from the environment when they
    are, so a process that never needs transformers or datasets (infer.py on a compact export) skips them.
    """
    import logging
    import warnings

    warnings.filterwarnings("ignore", message=".*TensorFlow and JAX classes are deprecated.*")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*The output of `to_tf_dataset`.*")
    warnings.filterwarnings("ignore", message=".*seed_generator.*")
    for key, value in _QUIET_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    if "transformers" in sys.modules:
        sys.modules["transformers"].logging.set_verbosity_error()
    if "datasets" in sys.modules:
        datasets = sys.modules["datasets"]
        datasets.logging.set_verbosity_error()
        datasets.disable_progress_bars()
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # what tf.get_logger() returns


def peak_rss_mib() -> float | None:
    """The largest resident memory this process has had so far, in MiB (None where the OS does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / 2**20 if sys.platform == "darwin" else peak / 1024, 1)  # bytes on macOS, KiB on Linux


def returning_freed_memory(function):
    """``function``, then Python's garbage collected (TensorFlow's functions and graphs die in reference cycles)
    and the memory the process freed handed back to the OS (glibc's malloc_trim: malloc keeps it for reuse), for
    a step whose copies die with its locals: after a SavedModel export of MiniLM, ~0.9 GiB of the graph's."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        finally:
            import ctypes
            import gc

            gc.collect()
            with contextlib.suppress(AttributeError, OSError, TypeError):  # not glibc: its own way, or none
                ctypes.CDLL(None).malloc_trim(0)

    return wrapper


# What TensorFlow's C++ side prints while it loads and looks for devices: set-up notes, not problems of the run.
# They reach stderr before absl logging is initialised, so TF_CPP_MIN_LOG_LEVEL does not hold them back.
_STARTUP_NOISE = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "cudart_stub.cc",  # "Could not find cuda drivers on your machine, GPU will not be used."
    "Unable to register cuDNN factory", "Unable to register cuFFT factory", "Unable to register cuBLAS factory",
    "computation placer already registered",
    "oneDNN custom operations are on",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "TF-TRT Warning: Could not find TensorRT",
    "Created TensorFlow Lite XNNPACK delegate for CPU",  # LiteRT, once per interpreter
)
# cuInit failing is expected where there is no NVIDIA device at all; with one, it is a real driver problem.
_NO_GPU_NOISE = ("failed call to cuInit",)


def has_nvidia_device() -> bool:
    """Whether this machine has an NVIDIA device node (Linux: /dev/nvidia0, /dev/nvidiactl, ...)."""
    import glob

    return bool(glob.glob("/dev/nvidia*")) or sys.platform not in ("linux", "darwin")


def is_startup_noise(line: str, gpu_present: bool) -> bool:
    """Whether ``line`` is one of TensorFlow's start-up notes that :func:`import_tensorflow` holds back.

    Example:
        >>> is_startup_noise("I0000 00:00:17.1 4570 cudart_stub.cc:31] Could not find cuda drivers", False)
        True
    """
    patterns = _STARTUP_NOISE + (() if gpu_present else _NO_GPU_NOISE)
    return any(pattern in line for pattern in patterns)


# What TensorFlow's __init__ imports eagerly from Keras (so that Keras optimizers are registered for SavedModels
# that hold them). A process that only loads tfbert's exports needs none of it: ~0.7 s and ~100 MiB (tf-keras
# imports pandas) of a one-text infer.py. Keras still loads in full when something asks for it.
_KERAS_EAGER_IMPORTS = ("tf_keras.src.optimizers", "keras.src.optimizers")


def import_tensorflow(verbose: bool = False, keras: bool = True, frozen_weights: bool = False):
    """Import TensorFlow and let it find its devices, keeping its C++ start-up notes off the terminal.

    While TensorFlow loads, file descriptor 2 goes to a buffer; afterwards every line of it except the
    known notes (:func:`is_startup_noise`) is written to stderr, so real errors still show. With ``verbose``,
    nothing is held back. ``keras=False`` leaves out Keras' optimizers, which TensorFlow would import at once;
    the first use of Keras imports them as usual. Later imports of TensorFlow are then free and silent.

    ``frozen_weights``: the process only predicts, so oneDNN lays each MatMul's weights out once, as for graph
    constants (TF_ONEDNN_ASSUME_FROZEN_WEIGHTS; docs/serving.md). Set only when this call imports TensorFlow (no
    kernel built before), for processes that never change a weight: each kernel keeps its second input's first values.

    Example:
        >>> tf = import_tensorflow()
        >>> tf.constant(1).numpy()
        1
    """
    if "tensorflow" in sys.modules:
        import tensorflow as tf

        return tf
    if frozen_weights:
        os.environ.setdefault("TF_ONEDNN_ASSUME_FROZEN_WEIGHTS", "1")
    held_back = [] if keras else [name for name in _KERAS_EAGER_IMPORTS if name not in sys.modules]
    for name in held_back:
        sys.modules[name] = None  # an ImportError for TensorFlow's __init__, which skips the import on one
    try:
        with contextlib.nullcontext() if verbose else startup_noise_held_back():
            import tensorflow as tf

            tf.config.list_physical_devices()  # the device search prints the cuInit line
    finally:
        for name in held_back:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]
    return tf


def load_text_ops() -> None:
    """Register TF Text's ops (those of the in-graph tokenizers) with TensorFlow, to load an export.

    Loads the op libraries of the installed tensorflow-text without its Python API, which imports Keras
    (:func:`import_tensorflow`); the same libraries ``import tensorflow_text`` loads, so both may follow.

    Example:
        >>> load_text_ops()  # doctest: +SKIP
    """
    import importlib.util
    from pathlib import Path

    spec = None if "tensorflow_text" in sys.modules else importlib.util.find_spec("tensorflow_text")
    if spec is None or not spec.submodule_search_locations:
        import tensorflow_text  # noqa: F401  (imported already, or not installed: its own error)

        return
    import tensorflow as tf

    for library in sorted(Path(spec.submodule_search_locations[0], "python", "ops").glob("_*.so")):
        tf.load_op_library(str(library))


# Up to this many texts (a judgement, not a measured crossing), a process that predicts once spends longer in
# Grappler's optimisation of the first call than the optimised graph saves it: MiniLM's first call took 44.7 s with
# it and 15.8 s without on a loaded machine, the second ones alike (docs/compact_export.md).
FEW_TEXTS = 64


def optimise_graphs_for(n_texts: int) -> bool:
    """Turn TensorFlow's graph optimiser (Grappler) off in a process that will predict ``n_texts`` <= FEW_TEXTS
    texts once; return whether it stays on.

    Grappler rewrites a function's graph at its first call (constant folding over the weights, op fusions): seconds
    that pay off over many batches, not over one text.

    Example:
        >>> optimise_graphs_for(1)  # doctest: +SKIP
        False
    """
    import tensorflow as tf

    if n_texts > FEW_TEXTS:
        return True
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    return False


def startup_noise_held_back():
    """A context in which the C++ start-up notes (:func:`is_startup_noise`) written to stderr are dropped and
    every other line is kept (written out at the end).

    Example:
        >>> with startup_noise_held_back():
        ...     interpreter.allocate_tensors()  # doctest: +SKIP
    """
    gpu_present = has_nvidia_device()
    return _stderr_filtered(lambda line: is_startup_noise(line, gpu_present))


class _stderr_filtered:
    """Send file descriptor 2 to a temporary file; on exit, restore it and replay the lines ``drop`` keeps."""

    def __init__(self, drop):
        self.drop, self.saved, self.buffer = drop, None, None

    def __enter__(self):
        import tempfile

        try:
            sys.stderr.flush()
            self.saved = os.dup(2)
        except (OSError, ValueError):  # no usable fd 2 (a closed stderr): nothing to filter
            return self
        self.buffer = tempfile.TemporaryFile()
        os.dup2(self.buffer.fileno(), 2)
        return self

    def __exit__(self, *exc_info):
        if self.saved is None:
            return False
        sys.stderr.flush()
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.buffer.seek(0)
        kept = [line for line in self.buffer.read().decode("utf-8", "replace").splitlines(keepends=True)
                if not self.drop(line)]
        self.buffer.close()
        if kept:
            sys.stderr.write("".join(kept))
            sys.stderr.flush()
        return False
