"""Run folders: create them (never reusing one), write files atomically, mark their status, find them.

    output/<dataset>/<model>/<date>_<time>/   and   plots/<dataset>/<model>/<date>_<time>/

A run is finished when status.json says so; metrics.json is written only by a finished run. A running
run's status names its process and host and a heartbeat refreshed every 30 s, so a reader tells a live run
from one whose process died (reported as interrupted).

Example:
    >>> run = create_run("output", "plots", "ag_news", "all-MiniLM-L6-v2")  # doctest: +SKIP
    >>> write_json(run.path / "metrics.json", {"accuracy": 0.9})  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import socket
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from tfbert.errors import TfbertError

STATUS_FILE = "status.json"
HEARTBEAT_SECONDS = 30.0
STALE_AFTER_SECONDS = 150.0  # five missed heartbeats: the process is gone (or hung, which is no better)


@dataclass(frozen=True)
class Run:
    """Where one run writes: its folder under output/ and its figures' folder under plots/."""

    path: Path
    plots: Path
    run_id: str

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    @property
    def saved_model_base(self) -> Path:
        return self.path / "saved_model"

    @property
    def compact_dir(self) -> Path:
        return self.path / "compact"


def folder_bytes(path: Path) -> int:
    """Bytes of all files under ``path``."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def size_mib(run: Run, leaving_out: tuple[str, ...] = ()) -> float:
    """MiB on disk of a run folder and its figures, without the subfolders named in ``leaving_out``
    (e.g. checkpoints/ that are about to be dropped).

    Example:
        >>> size_mib(run, leaving_out=("checkpoints",))  # doctest: +SKIP
        96.4
    """
    total = folder_bytes(run.path) + folder_bytes(run.plots)
    total -= sum(folder_bytes(run.path / name) for name in leaving_out if (run.path / name).is_dir())
    return round(total / 2**20, 2)


def safe_name(name: str) -> str:
    """A path component from a dataset or model name: its last part, with odd characters replaced."""
    last = Path(name.rstrip("/")).name or name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", last).strip("._") or "model"


def create_run(output_dir: str | Path, plots_dir: str | Path, dataset: str, model: str,
               now: Optional[_dt.datetime] = None, fixed_id: Optional[str] = None) -> Run:
    """Create a new, empty run folder (and its plots folder); an existing one is never reused, except the folder
    ``fixed_id`` names (a cluster job's: the job started again before it wrote its config.json)."""
    now = now or _dt.datetime.now()
    relative = Path(safe_name(dataset)) / safe_name(model)
    stamp = now.strftime("%Y%m%d_%H%M%S")
    for attempt in range(1 if fixed_id else 100):
        run_id = fixed_id or (stamp if attempt == 0 else f"{stamp}_{attempt}")
        path = Path(output_dir) / relative / run_id
        try:
            path.mkdir(parents=True, exist_ok=bool(fixed_id))
        except FileExistsError:
            continue
        except OSError as error:
            raise TfbertError(f"--output_dir {output_dir}: cannot create {path} ({error.strerror})") from None
        plots = Path(plots_dir) / relative / run_id
        plots.mkdir(parents=True, exist_ok=True)
        return Run(path=path, plots=plots, run_id=str(relative / run_id))
    raise TfbertError(f"--output_dir {output_dir}: too many runs started this second")


def write_text(path: Path, text: str) -> None:
    """Write a file atomically: a reader sees the old file or the whole new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


class Heartbeat:
    """A daemon thread rewriting a running run's status.json every ``interval`` seconds with the time, so
    that readers can tell it from a run whose process was killed (which stops the writes)."""

    def __init__(self, run: Run, record: dict, interval: float = HEARTBEAT_SECONDS):
        self.run, self.record, self.interval = run, record, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="tfbert-heartbeat", daemon=True)

    def _write(self) -> None:
        write_json(self.run.path / STATUS_FILE, {**self.record, "heartbeat": _now()})

    def start(self) -> "Heartbeat":
        self._write()
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._write()
            except OSError:  # a full disk must not kill training; the next beat tries again
                pass

    def stop(self) -> None:
        """Stop writing; after this returns no heartbeat can overwrite a final status."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


_heartbeats: dict[Path, Heartbeat] = {}  # runs of this process now marked running


def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


def set_status(run: Run, status: str, **details: Any) -> None:
    """status.json: running (with pid, host and a heartbeat, refreshed by a thread until the next status),
    finished, failed (with the error) or interrupted, and when.

    Example:
        >>> set_status(run, "running"); set_status(run, "finished")  # doctest: +SKIP
    """
    beating = _heartbeats.pop(run.path, None)
    if beating:
        beating.stop()
    record = {"status": status, "time": _now(), **details}
    if status == "running":
        record.update(pid=os.getpid(), host=socket.gethostname())
        _heartbeats[run.path] = Heartbeat(run, record).start()
    else:
        write_json(run.path / STATUS_FILE, record)


def _process_gone(record: dict, now: Optional[_dt.datetime] = None) -> bool:
    """True when a status written as running belongs to a process that is dead (same host) or silent."""
    beat = record.get("heartbeat")
    if beat is None:  # written before heartbeats existed: nothing to judge by
        return False
    try:
        silent = ((now or _dt.datetime.now()) - _dt.datetime.fromisoformat(beat)).total_seconds()
    except (TypeError, ValueError):
        return True
    if silent > STALE_AFTER_SECONDS:
        return True
    if record.get("host") == socket.gethostname() and isinstance(record.get("pid"), int):
        try:
            os.kill(record["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, someone else's
            return False
    return False


def read_status(path: Path) -> dict:
    """A run's status.json; a run marked running whose process is gone reads as interrupted.

    Example:
        >>> read_status(Path("output/reviews/tiny/20261123_101500"))["status"]  # doctest: +SKIP
        'interrupted'
    """
    try:
        record = json.loads((Path(path) / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if record.get("status") == "running" and _process_gone(record):
        return {**record, "status": "interrupted", "reason": "its process stopped without a word (killed?)"}
    return record


def open_run(path: str | Path, plots_dir: str | Path) -> Run:
    """The :class:`Run` of an existing folder under ``<output_dir>/<dataset>/<model>/<id>``, to continue it."""
    path = Path(path)
    relative = Path(*path.parts[-3:])
    plots = Path(plots_dir) / relative
    plots.mkdir(parents=True, exist_ok=True)
    return Run(path=path, plots=plots, run_id=str(relative))


def unfinished_runs(output_dir: str | Path) -> list[Path]:
    """Run folders under output_dir that stopped before finishing (interrupted or failed), oldest first."""
    root = Path(output_dir)
    found = [status.parent for status in root.glob(f"**/{STATUS_FILE}") if
             read_status(status.parent).get("status") in ("interrupted", "failed")] if root.is_dir() else []
    return sorted(found, key=lambda p: (p.name, str(p)))


def finished_runs(output_dir: str | Path) -> list[Path]:
    """Finished run folders under output_dir, oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    runs = [status.parent for status in root.glob(f"**/{STATUS_FILE}") if read_status(status.parent).get("status") == "finished"]
    return sorted(runs, key=lambda p: ((p / STATUS_FILE).stat().st_mtime, str(p)))


def newest_run(output_dir: str | Path) -> Path:
    """The most recently finished run folder."""
    runs = finished_runs(output_dir)
    if not runs:
        raise TfbertError(f"no finished run under {output_dir}/; train one with python train.py, or pass --model")
    return runs[-1]
