"""Strategy choice, global-batch semantics, and training across replicas and worker processes.

The slow tests train in fresh subprocesses: logical devices and MultiWorkerMirroredStrategy must be set up
before TensorFlow initialises, once per process.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tfbert import distribution, runs
from tfbert.config import parse_train_args
from tfbert.errors import TfbertError

ROOT = Path(__file__).resolve().parent.parent
TWO_WORKERS = {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 0}}


@pytest.mark.parametrize("requested, tpu, tf_config, gpus, expected", [
    ("auto", "", {}, 0, "default"),
    ("auto", "", {}, 1, "mirrored"),  # one GPU is a mirror of one: one code path
    ("auto", "", TWO_WORKERS, 4, "multi_worker"),
    ("auto", "grpc://10.0.0.2:8470", {}, 0, "tpu"),
    ("mirrored", "", {}, 0, "mirrored"),
])
def test_strategy_name(requested, tpu, tf_config, gpus, expected):
    assert distribution.strategy_name(requested, tpu, tf_config, gpus) == expected


def test_parameter_server_is_refused_in_one_line_saying_why():
    with pytest.raises(TfbertError, match="parameter_server is not supported: .*batch-level callbacks.*multi_worker"):
        parse_train_args(["--strategy", "parameter_server"])


def test_tpu_address_needs_a_tpu_strategy():
    with pytest.raises(TfbertError, match="--tpu needs --strategy tpu or auto"):
        parse_train_args(["--strategy", "mirrored", "--tpu", "local"])


def test_tf_config_is_checked_against_the_strategy():
    with pytest.raises(TfbertError, match="not valid JSON"):
        distribution.tf_config_from_env({"TF_CONFIG": "{worker"})
    with pytest.raises(TfbertError, match="needs TF_CONFIG"):
        distribution.select_strategy("multi_worker", environ={})
    with pytest.raises(TfbertError, match="names 2 workers but --strategy is default"):
        distribution.select_strategy("default", environ={"TF_CONFIG": json.dumps(TWO_WORKERS)})


def test_an_uneven_global_batch_is_named():
    assert distribution.batch_split_warning(32, 4) is None
    assert "use a multiple of 3 (e.g. 33)" in distribution.batch_split_warning(32, 3)


def test_a_cluster_job_names_its_run_folder_by_no_clock():
    env = {"TF_CONFIG": json.dumps(TWO_WORKERS)}
    other_task = {"TF_CONFIG": json.dumps({**TWO_WORKERS, "task": {"type": "worker", "index": 1}})}
    assert distribution.job_run_id(env).startswith("cluster_")
    assert distribution.job_run_id(env) == distribution.job_run_id(other_task)  # every worker agrees
    assert distribution.job_run_id({**env, "TFBERT_RUN_ID": "123.pbs 01"}) == "job_123.pbs_01"
    assert distribution.job_run_id({"TFBERT_RUN_ID": "123"}) is None  # one process: a run per start


SAME_WEIGHTS = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tfbert
    import tensorflow as tf
    from pathlib import Path
    replicas, accum, folder, out = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
    import datasets
    from tfbert import modeling, runtime, training
    from tfbert.data.pipeline import tokenize, training_dataset

    runtime.set_precision("float32")
    runtime.set_seed(0, deterministic=True)
    strategy = runtime.strategy_for([d.name for d in tf.config.list_logical_devices("CPU")])
    assert strategy.num_replicas_in_sync == replicas
    tokenizer = modeling.load_tokenizer(folder)
    texts = ["good item", "bad phone is very bad", "great book", "awful product and a broken phone"] * 8
    data = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": texts, "label": [0, 1, 0, 1] * 8})})
    encoded = tokenize(data, tokenizer, max_length=16)["train"]
    with strategy.scope():
        model = modeling.load_for_training(folder, ["pos", "neg"])
        # Plain SGD: its update is proportional to the loss, so a wrong scaling over replicas or micro-batches
        # moves the weights by a share of a whole update (~0.1 here); see the test for why not AdamW.
        model.compile(optimizer=tf.keras.optimizers.SGD(learning_rate=0.5),
                      loss=training.classification_loss, metrics=["accuracy"])
        training.accumulate_gradients(model, accum)
    model.fit(training_dataset(encoded, tokenizer, batch_size=8, seed=0, repeat=True), epochs=1, steps_per_epoch=6,
              verbose=0)
    np.savez(out, *model.get_weights())
    """
)


def dropout_free_copy(tiny_model_dir: Path, folder: Path) -> Path:
    """The tiny model without dropout: replicas draw their own dropout masks, so only a dropout-free model can
    give the same weights on one replica and on two."""
    import shutil

    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def trained_weights(folder: Path, replicas: int, accum: int, out: Path) -> list[np.ndarray]:
    completed = subprocess.run([sys.executable, "-c", SAME_WEIGHTS, str(replicas), str(accum), str(folder), str(out)],
                               cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    with np.load(out) as saved:
        return [saved[f"arr_{i}"] for i in range(len(saved.files))]


@pytest.mark.slow
def test_two_replicas_train_the_weights_of_one_with_the_same_global_batch(tiny_model_dir, tmp_path):
    folder = dropout_free_copy(tiny_model_dir, tmp_path / "model")
    one = trained_weights(folder, 1, 1, tmp_path / "one.npz")
    two = trained_weights(folder, 2, 1, tmp_path / "two.npz")
    two_accumulated = trained_weights(folder, 2, 2, tmp_path / "two_accumulated.npz")  # 2 replicas x 2 parts of 2
    initial = trained_weights(folder, 1, 1, tmp_path / "again.npz")
    assert all(np.array_equal(a, b) for a, b in zip(one, initial))  # the run itself is deterministic
    # Same data, loss and update; only the float32 summation order differs (two replicas' halves summed by an
    # all-reduce, micro-batches summed in a loop): measured 1.2e-7 and 2.4e-7 after 6 steps that move the
    # weights by up to 0.19, i.e. an ulp or two of weights of order 1. Under AdamW the same rounding is not
    # bounded: Adam divides each gradient by its own running size, so a gradient that is zero in exact
    # arithmetic (attention's key bias: softmax ignores a shift common to a row) becomes a step of up to
    # the learning rate, and 6 steps at 1e-2 part by ~3e-3 even on one device with --grad_accum_steps 2.
    assert max(float(np.abs(a - b).max()) for a, b in zip(one, two)) < 1e-6
    assert max(float(np.abs(a - b).max()) for a, b in zip(one, two_accumulated)) < 1e-6


WORKER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tfbert
    from tfbert import backup, experiment
    from tfbert.config import parse_train_args

    weights_file, argv = sys.argv[1], sys.argv[2:]
    evaluate_and_write = experiment._evaluate_and_write

    def keeping_weights(context, prepared, model, *rest):  # the trained (best-epoch) weights of this worker
        np.savez(weights_file, *model.get_weights())
        return evaluate_and_write(context, prepared, model, *rest)

    experiment._evaluate_and_write = keeping_weights
    read_backup = backup.read_backup

    def reporting_backup(folder):  # where a restarted worker continues from, for the test to read
        found = read_backup(folder)
        print(f"restored backup: {found.epoch} {found.batch}" if found else "no backup", file=sys.stderr, flush=True)
        return found

    backup.read_backup = reporting_backup
    print(json.dumps(experiment.train(parse_train_args(argv), report=lambda line: None)))
    """
)


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_workers(train_args: list[str], tmp_path: Path, n: int = 2, run_id: str = "",
                  log_suffix: str = "") -> list[subprocess.Popen]:
    hosts = [f"127.0.0.1:{port}" for port in free_ports(n)]
    processes = []
    for rank in range(n):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": {"worker": hosts},
                                                    "task": {"type": "worker", "index": rank}}))
        if run_id:
            env["TFBERT_RUN_ID"] = run_id
        log = open(tmp_path / f"worker{rank}{log_suffix}.log", "w")
        processes.append(subprocess.Popen(
            [sys.executable, "-c", WORKER, str(tmp_path / f"weights{rank}.npz"), *train_args],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True))
    return processes


def wait_all(processes: list[subprocess.Popen], seconds: float) -> list[str]:
    """Every process's stdout; on timeout every process group is killed and the test fails."""
    deadline = time.monotonic() + seconds
    try:
        return [process.communicate(timeout=max(1.0, deadline - time.monotonic()))[0] for process in processes]
    except subprocess.TimeoutExpired:
        pytest.fail(f"the workers did not finish within {seconds:.0f} s")
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.mark.slow
def test_two_worker_processes_train_identical_weights_and_only_the_chief_writes(tiny_model_dir, tiny_jsonl, tmp_path):
    output, plots = tmp_path / "output", tmp_path / "plots"
    train_args = ["--train_file", str(tiny_jsonl), "--model_name", str(tiny_model_dir), "--epochs", "2",
                  "--batch_size", "8", "--max_length", "32", "--precision", "float32", "--fused_ops", "off",
                  "--patience", "0", "--output_dir", str(output), "--plots_dir", str(plots), "--quiet"]
    started = time.monotonic()
    outputs = wait_all(start_workers(train_args, tmp_path), seconds=180)
    print(f"two workers: {time.monotonic() - started:.0f} s")
    logs = "\n".join((tmp_path / f"worker{rank}.log").read_text()[-2000:] for rank in range(2))
    summaries = [json.loads(text.strip().splitlines()[-1]) for text in outputs if text.strip()]
    assert len(summaries) == 2, logs
    chief, worker = summaries
    assert Path(chief["run_dir"]).is_dir() and worker["worker"] == "worker 1"
    assert chief["best_epoch"] == worker["best_epoch"]
    assert abs(chief["test_macro_f1"] - worker["test_macro_f1"]) < 1e-9  # one collective prediction, seen by both
    runs = [p.parent for p in output.rglob("status.json")]
    assert runs == [Path(chief["run_dir"])]  # the run folder exists once
    config = json.loads((runs[0] / "config.json").read_text())
    assert config["resolved"]["strategy"] == "MultiWorkerMirroredStrategy" and config["resolved"]["replicas"] == 2
    assert (runs[0] / "metrics.json").is_file() and (runs[0] / "saved_model").is_dir()
    with np.load(tmp_path / "weights0.npz") as a, np.load(tmp_path / "weights1.npz") as b:
        assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)


@pytest.mark.slow
def test_a_killed_worker_restarts_from_the_backup_and_the_job_completes(tiny_model_dir, tiny_jsonl, tmp_path):
    """MultiWorkerMirroredStrategy cannot take a restarted peer back: the survivor's collectives fail (TF's health
    check aborts them), it exits non-zero, and the whole job starts again, as a scheduler requeues it, with
    --resume auto; the job id (TFBERT_RUN_ID) names the run folder, so every worker finds the chief's backups."""
    output = tmp_path / "output"
    train_args = ["--train_file", str(tiny_jsonl), "--model_name", str(tiny_model_dir), "--epochs", "4",
                  "--batch_size", "8", "--max_length", "32", "--precision", "float32", "--fused_ops", "off",
                  "--patience", "0", "--save_every", "2", "--output_dir", str(output),
                  "--plots_dir", str(tmp_path / "plots"), "--quiet"]
    started = time.monotonic()
    first = start_workers(train_args, tmp_path, run_id="4242", log_suffix="_first")
    try:
        deadline = time.monotonic() + 150
        while not list(output.glob("*/*/job_4242/checkpoints/backup/chief/checkpoint")):
            assert time.monotonic() < deadline and all(p.poll() is None for p in first), "no backup in time"
            time.sleep(0.2)
        os.killpg(first[1].pid, signal.SIGKILL)
        first[1].wait()
        killed = time.monotonic()
        try:
            first[0].communicate(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail("the chief did not stop within 120 s of losing its peer")
        print(f"the chief stopped {time.monotonic() - killed:.0f} s after its peer, exit code {first[0].returncode}")
        assert first[0].returncode != 0  # it must not hang, nor finish alone
    finally:
        for process in first:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    outputs = wait_all(start_workers([*train_args, "--resume", "auto"], tmp_path, run_id="4242"), seconds=180)
    print(f"killed and restarted: {time.monotonic() - started:.0f} s")
    logs = "\n".join((tmp_path / f"worker{rank}.log").read_text()[-3000:] for rank in range(2))
    summaries = [json.loads(text.strip().splitlines()[-1]) for text in outputs if text.strip()]
    assert len(summaries) == 2, logs
    run = Path(summaries[0]["run_dir"])
    assert run.name == "job_4242" and [p.parent for p in output.rglob("status.json")] == [run]
    assert runs.read_status(run)["status"] == "finished" and (run / "metrics.json").is_file()
    for rank in range(2):  # each worker continued from the backup, not from scratch
        restored = re.findall(r"restored backup: (\d+) (\d+)", (tmp_path / f"worker{rank}.log").read_text())
        assert restored and int(restored[0][0]) * 100 + int(restored[0][1]) > 0, logs
    assert [row.split(",")[0] for row in (run / "log.csv").read_text().splitlines()[1:]] == ["0", "1", "2", "3"]
    with np.load(tmp_path / "weights0.npz") as a, np.load(tmp_path / "weights1.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in a.files)
