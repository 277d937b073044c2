"""Which tf.distribute strategy a run trains under, and which process of a cluster writes the results.

``--batch_size`` is the global batch: the examples of one optimizer step summed over every replica of every
worker, as in Keras' distributed training guide and Hugging Face's TF examples. Keras splits each batch of the
dataset across the replicas, so steps per epoch, warm-up and the learning-rate schedule do not change with the
number of devices; each replica sees batch_size / replicas examples.

Example:
    >>> strategy_name("auto", tpu="", tf_config={}, gpus=2)
    'mirrored'
    >>> strategy = select_strategy("auto")  # doctest: +SKIP
    >>> with strategy.scope():  # doctest: +SKIP
    ...     model = build_and_compile()
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

from tfbert.errors import TfbertError

logger = logging.getLogger(__name__)

STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu", "parameter_server")
# Why parameter_server is refused, in full: docs/clusters.md.
PARAMETER_SERVER_REFUSAL = (
    "--strategy parameter_server is not supported: Keras' fit under ParameterServerStrategy rejects batch-level "
    "callbacks (tfbert's step timer, progress lines and --save_every backups) and updates the weights "
    "asynchronously, so a step is no longer one global batch; use --strategy multi_worker"
)


def tf_config_from_env(environ: Optional[dict] = None) -> dict:
    """TF_CONFIG as a dict ({} when unset); a value that is not a JSON object is a :class:`TfbertError`.

    Example:
        >>> tf_config_from_env({"TF_CONFIG": '{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", '
        ...                     '"index": 0}}'})["task"]
        {'type': 'worker', 'index': 0}
    """
    text = (os.environ if environ is None else environ).get("TF_CONFIG", "").strip()
    if not text:
        return {}
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise TfbertError(f"TF_CONFIG is not valid JSON ({error}); build it with: python -m tfbert.cluster tf-config")
    if not isinstance(config, dict):
        raise TfbertError("TF_CONFIG must be a JSON object with 'cluster' and 'task'")
    return config


RUN_ID_VARIABLE = "TFBERT_RUN_ID"  # the job scripts in scripts/ set it to the scheduler's job id


def job_run_id(environ: Optional[dict] = None) -> Optional[str]:
    """The run folder name every worker of a cluster job agrees on (None outside a cluster), read from no clock:
    ``job_`` and TFBERT_RUN_ID when set, else ``cluster_`` and a digest of TF_CONFIG's cluster. A restarted
    worker, or the whole job requeued, finds the same folder and the chief's backups in it.

    Example:
        >>> job_run_id({"TF_CONFIG": '{"cluster": {"worker": ["a:1", "b:1"]}}', "TFBERT_RUN_ID": "4242.pbs"})
        'job_4242.pbs'
    """
    environ = os.environ if environ is None else environ
    tf_config = tf_config_from_env(environ)
    if worker_count(tf_config) < 2:
        return None
    given = environ.get(RUN_ID_VARIABLE, "").strip()
    if given:
        return "job_" + re.sub(r"[^A-Za-z0-9._-]+", "_", given)
    cluster = json.dumps(tf_config.get("cluster", {}), sort_keys=True)
    return "cluster_" + hashlib.sha1(cluster.encode()).hexdigest()[:10]


def worker_count(tf_config: dict) -> int:
    """Training processes TF_CONFIG names: its chief (if any) and its workers."""
    cluster = tf_config.get("cluster", {})
    return len(cluster.get("chief", [])) + len(cluster.get("worker", []))


def strategy_name(requested: str, tpu: str, tf_config: dict, gpus: int) -> str:
    """The strategy ``--strategy`` resolves to: auto picks multi_worker when TF_CONFIG names several workers,
    tpu with ``--tpu``, mirrored with one GPU or more (one GPU is a mirror of one, so there is one code path),
    else default.

    Example:
        >>> strategy_name("auto", "", {"cluster": {"worker": ["a:1", "b:1"]}}, gpus=0)
        'multi_worker'
    """
    if requested == "parameter_server":
        raise TfbertError(PARAMETER_SERVER_REFUSAL)
    if requested != "auto":
        return requested
    if worker_count(tf_config) > 1:
        return "multi_worker"
    if tpu:
        return "tpu"
    return "mirrored" if gpus >= 1 else "default"


def _check_cluster(name: str, tf_config: dict) -> None:
    if name == "multi_worker" and not worker_count(tf_config):
        raise TfbertError("--strategy multi_worker needs TF_CONFIG naming the workers; "
                          "build it with: python -m tfbert.cluster tf-config --nodes-file F --rank R")
    if name != "multi_worker" and worker_count(tf_config) > 1:
        raise TfbertError(f"TF_CONFIG names {worker_count(tf_config)} workers but --strategy is {name}; "
                          "use --strategy multi_worker (or auto), or unset TF_CONFIG")


def _grow_gpu_memory(tf) -> None:
    """Allocate GPU memory as needed rather than all of it up front (must precede the devices' first use)."""
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # devices already initialised
            pass


def _tpu_strategy(tf, address: str):
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address or None)  # None: the TPU VM's own
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def select_strategy(requested: str = "auto", tpu: str = "", global_batch: int = 0, environ: Optional[dict] = None):
    """The strategy of ``--strategy``/``--tpu``, to be created before TensorFlow's first op, as
    MultiWorkerMirroredStrategy requires (it configures the collective ops of the process). Logs a warning
    when ``global_batch`` (--batch_size) does not split evenly over the replicas.

    Example:
        >>> strategy = select_strategy("default")
        >>> strategy.num_replicas_in_sync
        1
    """
    import tensorflow as tf

    tf_config = tf_config_from_env(environ)
    name = strategy_name(requested, tpu, tf_config, len(tf.config.list_physical_devices("GPU")))
    _check_cluster(name, tf_config)
    _grow_gpu_memory(tf)
    if name == "multi_worker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()  # reads TF_CONFIG
    elif name == "tpu":
        strategy = _tpu_strategy(tf, tpu)
    elif name == "mirrored":
        strategy = tf.distribute.MirroredStrategy()  # every local GPU, or the CPU when there is none
    else:
        strategy = tf.distribute.get_strategy()
    logger.info("strategy: %s with %d replica(s)", type(strategy).__name__, strategy.num_replicas_in_sync)
    warning = batch_split_warning(global_batch, strategy.num_replicas_in_sync)
    if warning:
        logger.warning(warning)
    return strategy


def in_multi_worker_mode(strategy) -> bool:
    """Whether ``strategy`` spans several processes (its collectives need every worker to take part)."""
    return bool(strategy.extended._in_multi_worker_mode())  # Keras' own test for the same question


def is_chief(strategy) -> bool:
    """Whether this process writes the run folder, plots and exports: always outside a cluster; in one,
    the chief (worker 0 when TF_CONFIG has no chief task), as Keras' ``should_checkpoint`` says.

    Example:
        >>> import tensorflow as tf
        >>> is_chief(tf.distribute.get_strategy())
        True
    """
    return not in_multi_worker_mode(strategy) or bool(strategy.extended.should_checkpoint)


def task_label(strategy) -> str:
    """``worker 1`` or ``chief 0``: this process's task in TF_CONFIG, for logs and the worker's scratch folder."""
    extended = strategy.extended
    return f"{getattr(extended, '_task_type', None) or 'worker'} {getattr(extended, '_task_id', 0) or 0}"


def run_roots(strategy, output_dir: str, plots_dir: str) -> tuple[Path, Path, Optional[Path]]:
    """Where this process creates its run folder and figures, and its scratch folder (None on the chief).

    The chief (and any process outside a cluster) writes under ``output_dir`` and ``plots_dir``. The other
    workers run the same steps but write into a temporary folder that :func:`finish_worker` deletes, as
    Keras' multi-worker guide recommends for checkpoints: the run folder exists once.

    Example:
        >>> run_roots(tf.distribute.get_strategy(), "output", "plots")  # doctest: +SKIP
        (PosixPath('output'), PosixPath('plots'), None)
    """
    if is_chief(strategy):
        return Path(output_dir), Path(plots_dir), None
    scratch = Path(tempfile.mkdtemp(prefix=f"tfbert-{task_label(strategy).replace(' ', '')}-"))
    return scratch / "output", scratch / "plots", scratch


def finish_worker(strategy, scratch: Path, fitted, evaluations: dict) -> dict:
    """A non-chief worker's end: its scratch folder deleted, and a summary saying which worker it was."""
    shutil.rmtree(scratch, ignore_errors=True)
    return {"worker": task_label(strategy), "best_epoch": fitted.best_epoch,
            "test_macro_f1": evaluations["test"].metrics["macro_f1"], "run_dir": "(written by the chief)"}


def batch_split_warning(batch_size: int, replicas: int) -> Optional[str]:
    """A warning when the global batch does not split evenly over the replicas (Keras then gives some replicas
    one example fewer, and the loss is a mean of unequal means).

    Example:
        >>> batch_split_warning(30, 4)
        '--batch_size 30 does not split evenly over 4 replicas; use a multiple of 4 (e.g. 32)'
    """
    if replicas <= 1 or batch_size % replicas == 0:
        return None
    nearest = max(replicas, round(batch_size / replicas) * replicas)
    return f"--batch_size {batch_size} does not split evenly over {replicas} replicas; " \
           f"use a multiple of {replicas} (e.g. {nearest})"


def describe(strategy) -> dict[str, Any]:
    """The strategy part of config.json's resolved settings."""
    name = type(strategy).__name__
    public = {"CollectiveAllReduceStrategy": "MultiWorkerMirroredStrategy"}.get(name, name)  # TF's internal name
    return {"strategy": public, "replicas": strategy.num_replicas_in_sync,
            "workers": worker_count(tf_config_from_env()) or 1}
