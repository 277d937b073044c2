"""Runs that survive being killed: backups during fit, SIGTERM, status of a dead run, --resume."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_rows, write_jsonl

from tfbert import runs
from tfbert.config import TrainConfig, parse_train_args
from tfbert.errors import TfbertError
from tfbert.resume import given_flags, resumed_config

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--epochs", "3", "--lr", "3e-3", "--batch_size", "16", "--max_length", "32", "--precision", "float32",
        "--patience", "0", "--top_errors", "5", "--deterministic", "--save_every", "2", "--quiet"]


def fake_run(output: Path, status: str, model: str = "tiny", stamp: str = "20260101_000000", **settings) -> Path:
    """A run folder with a config.json and a status, as a run leaves them before training ends."""
    run = runs.create_run(output, output / "plots", "reviews", model, dt.datetime.strptime(stamp, "%Y%m%d_%H%M%S"))
    config = parse_train_args(["--train_file", "reviews.jsonl", "--model_name", model, *settings.get("argv", [])])
    runs.write_json(run.path / "config.json", {"settings": config.to_dict(), "data": {"fingerprint": "f" * 64}})
    runs.write_json(run.path / runs.STATUS_FILE, {"status": status})
    return run.path


def resolve(argv: list[str]) -> TrainConfig:
    return resumed_config(parse_train_args(argv), given_flags(argv))


# ---- choosing the run and its settings ----

def test_resume_keeps_the_runs_settings_and_lets_epochs_grow(tmp_path):
    run = fake_run(tmp_path, "interrupted", argv=["--lr", "1e-3", "--epochs", "3"])
    config = resolve(["--resume", str(run), "--epochs", "5", "--quiet", "--save_every", "10"])
    assert (config.training.lr, config.training.epochs, config.training.resume) == (1e-3, 5, str(run))
    assert config.training.quiet and config.training.save_every == 10
    assert config.data.train_file == "reviews.jsonl"
    same = resolve(["--resume", str(run), "--lr", "1e-3"])  # the run's own value: nothing changes
    assert same.training.lr == 1e-3


def test_resume_refuses_flags_that_change_the_result_naming_them(tmp_path):
    run = fake_run(tmp_path, "interrupted", argv=["--epochs", "3"])
    with pytest.raises(TfbertError) as refused:
        resolve(["--resume", str(run), "--lr", "1e-4", "--batch_size", "8", "--epochs", "2"])
    message = str(refused.value)
    assert "--lr" in message and "--batch_size" in message and "--epochs 2" in message and "\n" not in message


def test_resume_refuses_a_finished_or_running_run(tmp_path):
    finished = fake_run(tmp_path, "finished")
    with pytest.raises(TfbertError, match="finished"):
        resolve(["--resume", str(finished)])
    live = fake_run(tmp_path, "interrupted", stamp="20260102_000000")
    runs.write_json(live / runs.STATUS_FILE, {"status": "running", "pid": os.getpid(), "host": os.uname().nodename,
                                              "heartbeat": dt.datetime.now().isoformat(timespec="seconds")})
    with pytest.raises(TfbertError, match="still running"):
        resolve(["--resume", str(live)])
    with pytest.raises(TfbertError, match="not a run folder"):
        resolve(["--resume", str(tmp_path / "nowhere")])


def test_resume_auto_picks_the_newest_unfinished_run_of_the_same_data_and_model(tmp_path):
    argv = ["--resume", "auto", "--output_dir", str(tmp_path), "--train_file", "reviews.jsonl", "--model_name", "tiny"]
    fake_run(tmp_path, "finished", stamp="20260103_000000")
    assert resolve(argv).training.resume is None  # only finished runs: a new run
    older = fake_run(tmp_path, "interrupted", stamp="20260101_000000")
    newer = fake_run(tmp_path, "failed", stamp="20260102_000000")
    fake_run(tmp_path, "interrupted", model="other", stamp="20260104_000000")
    assert resolve(argv).training.resume == str(newer)
    assert older != newer


# ---- telling a dead run from a live one ----

def test_a_running_status_with_a_dead_process_or_stale_heartbeat_reads_interrupted(tmp_path):
    run = runs.create_run(tmp_path, tmp_path / "plots", "d", "m")
    now = dt.datetime.now()
    host = os.uname().nodename
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for record, expected in [
        ({"pid": os.getpid(), "host": host, "heartbeat": now.isoformat()}, "running"),
        ({"pid": dead.pid, "host": host, "heartbeat": now.isoformat()}, "interrupted"),
        ({"pid": 1, "host": "elsewhere", "heartbeat": (now - dt.timedelta(minutes=10)).isoformat()}, "interrupted"),
        ({"pid": 1, "host": "elsewhere", "heartbeat": now.isoformat()}, "running"),
    ]:
        runs.write_json(run.path / runs.STATUS_FILE, {"status": "running", **record})
        assert runs.read_status(run.path)["status"] == expected, record
    assert runs.finished_runs(tmp_path) == []


def test_heartbeat_refreshes_and_stops_at_the_final_status(tmp_path):
    run = runs.create_run(tmp_path, tmp_path / "plots", "d", "m")
    runs.set_status(run, "running")
    record = runs.read_status(run.path)
    assert record["status"] == "running" and record["pid"] == os.getpid() and "heartbeat" in record
    runs.set_status(run, "finished")
    time.sleep(0.05)
    assert runs.read_status(run.path)["status"] == "finished" and not runs._heartbeats


# ---- the backup callback, in process ----

def _tiny_fit(backup_dir: Path, stop, epochs: int, make_data, skip: int = 0, stop_after: int = 0, fused: bool = True):
    """A small model with dropout fitted on ``make_data()`` (less its first ``skip`` batches) with the backup
    callback, seeded and its dropout made as train.py does; SIGTERM to this process after ``stop_after`` steps
    (0: never)."""
    import tensorflow as tf

    from tfbert import fused_ops, runtime
    from tfbert.backup import training_backup

    runtime.set_seed(0)
    data = make_data().skip(skip)
    model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(8), tf.keras.layers.Dropout(0.3),
                                 tf.keras.layers.Dense(1)])
    if fused:
        fused_ops.fuse(model)
    assert fused_ops.seed_dropouts(model) == int(not fused)
    model.compile(tf.keras.optimizers.Adam(0.1), loss="mse")

    class Signal(tf.keras.callbacks.Callback):
        steps = 0

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1
            if self.steps == stop_after:
                os.kill(os.getpid(), signal.SIGTERM)

    backup = training_backup(backup_dir, 5, stop, save_every=2)
    with stop:
        model.fit(data, epochs=epochs, steps_per_epoch=5, verbose=0, callbacks=[Signal(), backup])
    return model, backup


@pytest.mark.parametrize("fused", [True, False], ids=["fused_dropout", "seeded_dropout"])
def test_sigterm_saves_a_backup_and_a_resumed_fit_ends_where_an_uninterrupted_one_does(tmp_path, fused):
    import tensorflow as tf

    from tfbert.backup import RunInterrupted, StopRequest, read_backup

    x = np.random.default_rng(0).normal(size=(40, 2)).astype("float32")

    def data():  # built anew, as each run of train.py does: a second iterator over one seeded shuffle reshuffles
        return tf.data.Dataset.from_tensor_slices((x, x.sum(1) * 3)).shuffle(40, seed=1).batch(4).repeat()

    whole, _ = _tiny_fit(tmp_path / "whole", StopRequest(), 3, data, fused=fused)
    with pytest.raises(RunInterrupted) as stopped:
        _tiny_fit(tmp_path / "cut", StopRequest(), 3, data, stop_after=7, fused=fused)  # epoch 2, its second step
    assert stopped.value.exit_code == 143
    state = read_backup(tmp_path / "cut")
    assert (state.epoch, state.batch, len(state.callbacks["epoch_logs"])) == (1, 1, 1)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone again

    resumed, backup = _tiny_fit(tmp_path / "cut", StopRequest(), 3, data, skip=state.batches_done(5), fused=fused)
    assert len(backup.epoch_logs) == 3
    for a, b in zip(whole.get_weights(), resumed.get_weights()):  # the same dropout masks: the same weights
        np.testing.assert_array_equal(a, b)
    names = sorted(p.name for p in (tmp_path / "cut" / "chief").glob("ckpt-*.index"))
    assert len(names) == 2  # the last two backups are kept


def test_log_csv_is_rewritten_from_the_backup_as_csvlogger_writes_it(tmp_path):
    from tfbert.backup import write_log_csv

    write_log_csv(tmp_path / "log.csv", [{"loss": 0.5, "val_macro_f1": 0.25}, {"loss": 0.25, "val_macro_f1": 0.5}])
    rows = list(csv.DictReader((tmp_path / "log.csv").open()))
    assert [r["epoch"] for r in rows] == ["0", "1"] and rows[1]["val_macro_f1"] == "0.5"


# ---- the whole command, killed and resumed ----

def _train(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _only_run(output: Path) -> Path:
    (run,) = [p.parent for p in output.glob("*/*/*/config.json")]
    return run


def _wait_for(condition, process: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def _weights(run: Path) -> dict[str, np.ndarray]:
    import h5py

    arrays = {}
    with h5py.File(run / "model" / "tf_model.h5", "r") as f:
        f.visititems(lambda name, item: arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None)
    return arrays


@pytest.fixture(scope="module")
def work(tiny_model_dir, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("resume")
    write_jsonl(work / "reviews.jsonl", make_rows(300))
    return work


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_model_and_metrics(work, tiny_model_dir):
    common = ["--train_file", "reviews.jsonl", "--model_name", str(tiny_model_dir), *TINY]
    whole = _train(*common, "--output_dir", "whole", cwd=work)
    assert whole.wait(timeout=900) == 0, whole.communicate()[1][-3000:]

    started = time.time()
    cut = _train(*common, "--output_dir", "cut", cwd=work)
    log = lambda: next((work / "cut").glob("*/*/*/log.csv"), None)  # noqa: E731
    # Killed in the second epoch, after the first epoch's row and at least one backup.
    _wait_for(lambda: log() is not None and len(log().read_text().splitlines()) >= 2, cut)
    cut.send_signal(signal.SIGKILL)
    cut.wait()
    run = _only_run(work / "cut")
    assert list((run / "checkpoints" / "backup" / "chief").glob("ckpt-*.index"))
    assert runs.read_status(run)["status"] == "interrupted"
    assert not (run / "metrics.json").exists() and not (run / "model").exists()
    with pytest.raises(TfbertError, match="no finished run"):
        runs.newest_run(work / "cut")

    resumed = _train("--resume", "auto", *common, "--output_dir", "cut", cwd=work)
    assert resumed.wait(timeout=900) == 0, resumed.communicate()[1][-3000:]
    elapsed = time.time() - started
    assert _only_run(work / "cut") == run and runs.read_status(run)["status"] == "finished"
    assert runs.newest_run(work / "cut") == run

    expected, got = _weights(_only_run(work / "whole")), _weights(run)
    assert expected.keys() == got.keys()
    largest = max(float(np.abs(expected[k] - got[k]).max()) for k in expected)
    print(f"kill/resume: {elapsed:.0f} s, largest weight difference {largest:.2e}")
    # The backups hold the generator every dropout draws from, so the resumed run repeats the same masks.
    assert largest <= 1e-5
    metrics = [json.loads((r / "metrics.json").read_text()) for r in (_only_run(work / "whole"), run)]
    for split in ("validation", "test"):
        for name, value in metrics[0][split].items():
            if isinstance(value, float):
                assert metrics[1][split][name] == pytest.approx(value, abs=1e-6), (split, name)
    rows = list(csv.DictReader((run / "log.csv").open()))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    whole_rows = list(csv.DictReader((_only_run(work / "whole") / "log.csv").open()))
    assert [float(r["val_macro_f1"]) for r in rows] == pytest.approx([float(r["val_macro_f1"]) for r in whole_rows],
                                                                      abs=1e-6)

    again = subprocess.run([sys.executable, str(ROOT / "train.py"), "--resume", str(run)], cwd=work,
                           capture_output=True, text=True)
    assert again.returncode == 2 and "finished" in again.stderr


@pytest.mark.slow
def test_sigterm_backs_up_marks_interrupted_and_exits_143(work, tiny_model_dir):
    process = _train("--train_file", "reviews.jsonl", "--model_name", str(tiny_model_dir), *TINY,
                     "--output_dir", "term", cwd=work)
    backups = lambda: list((work / "term").glob("*/*/*/checkpoints/backup/chief/ckpt-*.index"))  # noqa: E731
    _wait_for(lambda: bool(backups()), process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    run = _only_run(work / "term")
    assert process.returncode == 143, stderr[-3000:]
    assert runs.read_status(run)["status"] == "interrupted"
    assert f"--resume {run.relative_to(work)}" in stderr.strip().splitlines()[-1]
    assert not (run / "metrics.json").exists()
