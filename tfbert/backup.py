"""Training that survives being stopped: backups of the whole training state during ``fit``, and a clean stop
on SIGTERM/SIGINT that saves one first.

The backup is Keras' own ``BackupAndRestore`` (weights, optimizer slots and step, epoch and step within it;
the learning rate follows from the optimizer's step) and the state of TensorFlow's global random generator
(every dropout's masks: tfbert.fused_ops), written by a ``tf.train.CheckpointManager`` that keeps
the last two. TF checkpoints are atomic for readers: the data and index files are written first and the
``checkpoint`` file that names the latest one is replaced in one rename afterwards, so a backup cut short
is never the one restored. Each backup also holds, as a JSON string variable, what Keras leaves out: every
finished epoch's logs (log.csv and the choice of the best epoch), early stopping's and the best-epoch
checkpoint's counters.

Example:
    >>> with StopRequest() as stop:  # doctest: +SKIP
    ...     model.fit(data, epochs=3, steps_per_epoch=100,
    ...               callbacks=[..., training_backup("run/checkpoints/backup", 100, stop, save_every=20)])
"""

from __future__ import annotations

import json
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from tfbert.errors import TfbertError

BACKUP_DIR = "backup"  # under the run's checkpoints/
KEEP_BACKUPS = 2
_MANAGED = "chief"  # the folder Keras' BackupAndRestore reads its checkpoints from
_STATE_KEY = "callbacks/.ATTRIBUTES/VARIABLE_VALUE"


class RunInterrupted(TfbertError):
    """Training stopped on a signal after backing its state up; exit code 128 + the signal's number."""

    def __init__(self, signal_number: int, run_dir: Optional[Path] = None):
        self.signal_number = signal_number
        self.exit_code = 128 + signal_number  # the shell's convention: 143 for SIGTERM, 130 for SIGINT
        name = signal.Signals(signal_number).name
        where = f" {run_dir}" if run_dir else " <run folder>"
        super().__init__(f"stopped by {name} with the training state backed up; "
                         f"continue with: python train.py --resume{where}")


@dataclass
class StopRequest:
    """While entered, SIGTERM and SIGINT only set ``signal_number``: the backup callback saves at the next batch
    end and raises :class:`RunInterrupted`. A second Ctrl-C stops at once, as Python would.

    Example:
        >>> with StopRequest() as stop:  # doctest: +SKIP
        ...     model.fit(...)
        >>> stop.signal_number  # doctest: +SKIP
        15
    """

    signal_number: Optional[int] = None
    _previous: dict = field(default_factory=dict, repr=False)

    def _handle(self, number, frame) -> None:
        if number == signal.SIGINT and self.signal_number == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_number = number

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():  # Python only allows handlers there
            for number in (signal.SIGTERM, signal.SIGINT):
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()


@dataclass
class BackupState:
    """What the newest backup says, read without building a model: where training stands and the callbacks'
    state."""

    epoch: int  # 0-based epoch of the last finished step
    batch: int  # 0-based step within that epoch
    callbacks: dict

    def batches_done(self, steps_per_epoch: int) -> int:
        return self.epoch * steps_per_epoch + self.batch + 1

    def training_done(self, steps_per_epoch: int, epochs: int) -> bool:
        return bool(self.callbacks.get("stopped_early")) or self.batches_done(steps_per_epoch) >= epochs * steps_per_epoch


def read_backup(backup_dir: Path) -> Optional[BackupState]:
    """The newest complete backup under ``backup_dir``, or None.

    Example:
        >>> read_backup(Path("output/reviews/tiny/20261123_101500/checkpoints/backup"))  # doctest: +SKIP
        BackupState(epoch=1, batch=3, callbacks={...})
    """
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(str(Path(backup_dir) / _MANAGED))
    if latest is None:
        return None
    reader = tf.train.load_checkpoint(latest)
    epoch = int(reader.get_tensor("ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE"))
    batch = int(reader.get_tensor("ckpt_saved_batch/.ATTRIBUTES/VARIABLE_VALUE"))
    state = reader.get_tensor(_STATE_KEY) if reader.has_tensor(_STATE_KEY) else b"{}"
    return BackupState(epoch=epoch, batch=batch, callbacks=json.loads(state.decode("utf-8") or "{}"))


def write_log_csv(path: Path, epoch_logs: list[dict]) -> None:
    """log.csv as Keras' CSVLogger writes it (epoch, then the sorted keys), from the backed-up epochs, so that a
    resumed run's CSVLogger appends after exactly the epochs the backup holds.

    Example:
        >>> write_log_csv(Path("log.csv"), [{"loss": 0.9, "val_macro_f1": 0.4}])  # doctest: +SKIP
    """
    import csv
    import io

    from tfbert import runs

    if not epoch_logs:
        Path(path).unlink(missing_ok=True)
        return
    keys = sorted(epoch_logs[0])
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["epoch", *keys], lineterminator="\n")
    writer.writeheader()
    for epoch, logs in enumerate(epoch_logs):
        writer.writerow({"epoch": epoch, **{key: logs.get(key, "NA") for key in keys}})
    runs.write_text(Path(path), out.getvalue())


def training_backup(backup_dir: Path, steps_per_epoch: int, stop: StopRequest, save_every: int = 0,
                    early_stopping=None, best_checkpoint=None):
    """A Keras callback backing the training state up every ``save_every`` steps (0: at epoch ends only), at
    each epoch end and when ``stop`` is requested (then it raises :class:`RunInterrupted`). Put it last in the callback list:
    it restores the callbacks' counters after their own ``on_train_begin`` reset them, and saves after they
    updated them at an epoch's end.

    Example:
        >>> callbacks.append(training_backup(Path("run/checkpoints/backup"), 100, StopRequest(), save_every=20))  # doctest: +SKIP
    """
    return _backup_class()(Path(backup_dir), steps_per_epoch, stop, save_every, early_stopping, best_checkpoint)


def _backup_class():
    import tensorflow as tf

    class TrainingBackup(tf.keras.callbacks.BackupAndRestore):
        def __init__(self, backup_dir, steps_per_epoch, stop, save_every, early_stopping, best_checkpoint):
            # An integer save_freq makes Keras restore at the step after the backup, not at the next epoch.
            super().__init__(str(backup_dir), save_freq=save_every or steps_per_epoch, delete_checkpoint=False)
            self.steps_per_epoch, self.stop, self.save_every = steps_per_epoch, stop, save_every
            self.early_stopping, self.best_checkpoint = early_stopping, best_checkpoint
            self.epoch_logs: list[dict] = []  # every finished epoch's logs, the restored ones included
            self.stopped_early = False
            self._state = tf.Variable("", dtype=tf.string, trainable=False, name="tfbert_callbacks")

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)  # Keras builds its training state and restores the newest backup
            self._manage_backups()
            self._restore_random_state()
            restored = read_backup(Path(self.backup_dir))
            if restored:
                self._restore_callbacks(restored.callbacks)

        def _manage_backups(self):
            """Keras' manager keeps one backup; this one, over the same checkpoint plus the callbacks' state,
            keeps two, so that a damaged newest backup still leaves one. The other workers of a cluster save the
            same checkpoint to the temporary folder Keras gives them (and removes): under MultiWorkerMirroredStrategy
            creating and saving each variable is a collective op, so every worker must do the same ones."""
            state = self._training_state  # tf_keras 2.x WorkerTrainingState
            checkpoint = tf.train.Checkpoint(
                model=self.model, ckpt_saved_epoch=state._ckpt_saved_epoch, ckpt_saved_batch=state._ckpt_saved_batch,
                train_counter=self.model._train_counter, callbacks=self._state,
                rng=tf.random.get_global_generator())  # every dropout's random stream (tfbert.fused_ops)
            manager = tf.train.CheckpointManager(checkpoint, str(Path(self.backup_dir) / _MANAGED),
                                                 max_to_keep=KEEP_BACKUPS)
            if state.write_checkpoint_manager is state.read_checkpoint_manager:
                state.write_checkpoint_manager = manager
            else:
                state.write_checkpoint_manager = tf.train.CheckpointManager(
                    checkpoint, state.write_checkpoint_manager.directory, max_to_keep=1)
            state.read_checkpoint_manager = manager

        def _restore_random_state(self):
            """Keras restored the newest backup through its own checkpoint (model, epoch, step, train counter),
            which lacks the global generator: read that from the same backup, or dropout would start its
            masks over from the seed's first ones."""
            latest = tf.train.latest_checkpoint(str(Path(self.backup_dir) / _MANAGED))
            if latest is not None:
                tf.train.Checkpoint(rng=tf.random.get_global_generator()).read(latest).expect_partial()

        def _restore_callbacks(self, saved: dict):
            self.epoch_logs = list(saved.get("epoch_logs", []))
            self.stopped_early = bool(saved.get("stopped_early"))
            if self.early_stopping is not None and "early_stopping" in saved:
                for name, value in saved["early_stopping"].items():
                    setattr(self.early_stopping, name, value)
            if self.best_checkpoint is not None and "best" in saved:
                self.best_checkpoint.best = saved["best"]

        def _callbacks_state(self) -> dict:
            state = {"epoch_logs": self.epoch_logs, "stopped_early": self.stopped_early}
            if self.early_stopping is not None:
                state["early_stopping"] = {name: _plain(getattr(self.early_stopping, name))
                                           for name in ("wait", "best", "best_epoch", "stopped_epoch")}
            if self.best_checkpoint is not None:
                state["best"] = _plain(self.best_checkpoint.best)
            return state

        def _backup(self, epoch, batch=0):
            self._state.assign(json.dumps(self._callbacks_state()))
            super()._backup(epoch=epoch, batch=batch)

        def on_train_batch_end(self, batch, logs=None):
            step = batch + 1
            if self.stop.signal_number is not None:
                self._backup(self._current_epoch, batch)
                # Raised, not stop_training: that would still end the epoch, and the other callbacks would
                # score, log and keep a half epoch as if it were whole.
                raise RunInterrupted(self.stop.signal_number)
            if self.save_every and step % self.save_every == 0 and step < self.steps_per_epoch:
                self._backup(self._current_epoch, batch)  # the epoch's last step is backed up at its end

        def on_epoch_end(self, epoch, logs=None):
            self.epoch_logs.append({key: _plain(value) for key, value in (logs or {}).items()})
            self.stopped_early = bool(self.model.stop_training)  # early stopping, earlier in the list, said so
            self._backup(epoch, self.steps_per_epoch - 1)
            if self.stop.signal_number is not None:
                raise RunInterrupted(self.stop.signal_number)

    return TrainingBackup


def _plain(value):
    """A JSON-ready Python number from a NumPy or tensor scalar (inf stays inf: JSON here is Python's)."""
    try:
        return float(value) if not isinstance(value, (int, bool)) else value
    except (TypeError, ValueError):
        return None
