"""Process setup: environment before TensorFlow is imported, devices, strategy, precision, seeds.

Call :func:`prepare_process` before anything imports TensorFlow or transformers.
"""

from __future__ import annotations

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
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def strategy_for(devices: list[str]):
    """MirroredStrategy over ``devices`` when there are several, else the default (single-device) strategy."""
    import tensorflow as tf

    if len(devices) > 1:
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.get_strategy()


def select_strategy():
    """MirroredStrategy when several GPUs are visible, the default strategy otherwise.

    Example:
        >>> strategy = select_strategy()
        >>> with strategy.scope():
        ...     pass  # build and compile the model here
    """
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # devices already initialised
            pass
    strategy = strategy_for([device.name for device in tf.config.list_logical_devices("GPU")])
    logger.info("strategy: %s with %d replica(s)", type(strategy).__name__, strategy.num_replicas_in_sync)
    return strategy


def quiet_libraries() -> None:
    """Silence transformers' and TensorFlow's advisory chatter; keep errors."""
    import warnings

    warnings.filterwarnings("ignore", message=".*TensorFlow and JAX classes are deprecated.*")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*The output of `to_tf_dataset`.*")
    warnings.filterwarnings("ignore", message=".*seed_generator.*")
    import transformers

    transformers.logging.set_verbosity_error()
    import datasets

    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")


def peak_rss_mib() -> float | None:
    """The largest resident memory this process has had so far, in MiB (None where the OS does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / 2**20 if sys.platform == "darwin" else peak / 1024, 1)  # bytes on macOS, KiB on Linux
