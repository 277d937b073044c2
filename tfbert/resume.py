"""Continuing a run that stopped: ``--resume <run folder>`` or ``--resume auto``, with the run's own settings.

A resumed run reads its settings from its config.json. Flags given on the command line may only change what
leaves the result alone (where output and logs go, how often to back up) or let ``--epochs`` grow; any other
flag whose value differs is refused, naming it. A finished run is never trained again: ``--resume`` on one is
an error, and ``--resume auto`` looks only at interrupted or failed runs, else starts a new one.

Example:
    >>> config = parse_train_args(["--resume", "auto", "--train_file", "reviews.jsonl"])  # doctest: +SKIP
    >>> resumed_config(config, {"resume", "train_file"}).training.resume  # doctest: +SKIP
    'output/reviews/all-MiniLM-L6-v2/20261123_101500'
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterable, Optional

from tfbert import distribution, runs
from tfbert.config import TrainConfig
from tfbert.errors import TfbertError

# Flags that leave the trained model and its scores as they would have been (--epochs may also grow).
RESULT_FREE_FLAGS = frozenset({"resume", "save_every", "output_dir", "plots_dir", "cache_dir", "keep_checkpoints",
                               "log_every", "quiet", "json", "verbose"})
# What names the run a --resume auto may continue: the same data source and model.
IDENTITY_FLAGS = (("data", "dataset"), ("data", "train_file"), ("data", "data_dir"), ("model", "model_name"))


def given_flags(argv: Iterable[str]) -> set[str]:
    """The flag names on a command line, without their dashes: ['--lr', '3e-5', '--quiet'] -> {'lr', 'quiet'}."""
    return {token[2:].split("=", 1)[0] for token in argv if token.startswith("--") and len(token) > 2}


def _changed_from_defaults(config: TrainConfig) -> set[str]:
    """The fields of ``config`` that differ from their defaults: what a Python caller 'gave'."""
    default = TrainConfig()
    return {field.name for section in ("data", "model", "training")
            for field in dataclasses.fields(getattr(config, section))
            if getattr(getattr(config, section), field.name) != getattr(getattr(default, section), field.name)}


def resumed_config(config: TrainConfig, given: Optional[set[str]] = None) -> TrainConfig:
    """``config`` with ``--resume`` resolved: the run's own settings (with the allowed flags of ``config`` on top)
    and ``training.resume`` set to its folder; or, for ``auto`` without an unfinished run, ``config`` as a new
    run. ``given``: the flags the user gave (default: the fields that differ from their defaults).

    Example:
        >>> resumed_config(parse_train_args(["--resume", "output/d/m/20261123_101500"]), {"resume"})  # doctest: +SKIP
    """
    target = config.training.resume
    job = distribution.job_run_id()
    job_folder = job_run_folder(config.training.output_dir) if job else None
    if not target and job_folder is None:
        return config
    given = _changed_from_defaults(config) if given is None else set(given)
    if target in ("auto", None):  # None: a cluster job started again continues its own folder
        run_dir = job_folder if job else newest_resumable_run(config)
        if job_folder and runs.read_status(job_folder).get("status") == "finished":  # on every worker, before TF
            raise TfbertError(f"{job_folder}: this cluster job's run is finished; set "
                              f"{distribution.RUN_ID_VARIABLE} to another id for a new run")
        if run_dir is None:
            return dataclasses.replace(config, training=dataclasses.replace(config.training, resume=None))
    else:
        run_dir = resumable_folder(target)
    return _merged(saved_config(run_dir), config, given, run_dir)


def saved_config(run_dir: Path) -> TrainConfig:
    """The settings a run was started with, from its config.json (fields added since take their defaults)."""
    settings = json.loads((Path(run_dir) / "config.json").read_text(encoding="utf-8"))["settings"]
    sections = {}
    for name, section in (("data", TrainConfig().data), ("model", TrainConfig().model),
                          ("training", TrainConfig().training)):
        known = {field.name for field in dataclasses.fields(section)}
        sections[name] = dataclasses.replace(section, **{k: v for k, v in settings.get(name, {}).items() if k in known})
    return TrainConfig(**sections)


def resumable_folder(path: str | Path) -> Path:
    """``path`` if it is a run that can continue; else a TfbertError saying why (finished, still running, ...)."""
    run_dir = Path(path)
    if not (run_dir / "config.json").is_file():
        raise TfbertError(f"--resume {path}: not a run folder with a config.json (it may have failed before "
                          "training started); give a folder under --output_dir, or --resume auto")
    status = runs.read_status(run_dir)
    if status.get("status") == "finished":
        raise TfbertError(f"--resume {path}: that run is finished; start a new run without --resume")
    if status.get("status") == "running":
        raise TfbertError(f"--resume {path}: that run is still running (pid {status.get('pid')} on "
                          f"{status.get('host')}); stop it first")
    return run_dir


def job_run_folder(output_dir: str | Path) -> Optional[Path]:
    """The run folder of this cluster job (:func:`tfbert.distribution.job_run_id`) if an earlier start of it
    wrote its config.json, else None. Whatever its status: the job id names one run."""
    found = sorted(path.parent for path in Path(output_dir).glob(f"*/*/{distribution.job_run_id()}/config.json"))
    return found[0] if found else None


def cluster_run_dir(config: TrainConfig, corpus) -> Path:
    """The chief's run folder as the other workers of a cluster job name it (they read its backups): the folder
    resumed, else the job's."""
    if config.training.resume:
        return Path(config.training.resume)
    return (Path(config.training.output_dir) / runs.safe_name(corpus.name) / runs.safe_name(config.model.model_name)
            / distribution.job_run_id())


def newest_resumable_run(config: TrainConfig) -> Optional[Path]:
    """The newest interrupted or failed run under --output_dir of the same dataset and model, or None."""
    def identity(c: TrainConfig) -> tuple:
        return tuple(getattr(getattr(c, section), name) for section, name in IDENTITY_FLAGS)

    matching = []
    for run_dir in runs.unfinished_runs(config.training.output_dir):
        try:
            if identity(saved_config(run_dir)) == identity(config):
                matching.append(run_dir)
        except (OSError, ValueError, KeyError, TypeError):  # no readable config.json: nothing to continue
            continue
    return matching[-1] if matching else None


def _merged(saved: TrainConfig, config: TrainConfig, given: set[str], run_dir: Path) -> TrainConfig:
    """The run's settings, with the result-free flags of ``config`` that the user gave and a grown --epochs."""
    refused, sections = [], {}
    for section in ("data", "model", "training"):
        updates = {}
        for field in dataclasses.fields(getattr(saved, section)):
            name, new = field.name, getattr(getattr(config, section), field.name)
            old = getattr(getattr(saved, section), name)
            if name not in given or new == old:
                continue
            if name in RESULT_FREE_FLAGS or (name == "epochs" and new > old):
                updates[name] = new
            else:
                refused.append(f"--{name} {new} (the run has {old})")
        sections[section] = dataclasses.replace(getattr(saved, section), **updates)
    if refused:
        raise TfbertError(f"--resume {run_dir}: a resumed run keeps its own settings; drop {', '.join(refused)} "
                          "(only --epochs may grow), or start a new run")
    sections["training"] = dataclasses.replace(sections["training"], resume=str(run_dir))
    return TrainConfig(**sections)


def open_or_create_run(config: TrainConfig, corpus) -> runs.Run:
    """The folder this run writes to: the one being resumed (after checking its data is unchanged), or a new one.

    Example:
        >>> run = open_or_create_run(config, prepared.corpus)  # doctest: +SKIP
    """
    settings = config.training
    if not settings.resume:
        return runs.create_run(settings.output_dir, settings.plots_dir, corpus.name, config.model.model_name,
                               fixed_id=distribution.job_run_id())
    run_dir = Path(settings.resume)
    recorded = json.loads((run_dir / "config.json").read_text(encoding="utf-8")).get("data", {}).get("fingerprint")
    if recorded and recorded != corpus.fingerprint:
        raise TfbertError(f"--resume {run_dir}: the data changed since the run started (fingerprint {recorded[:12]} "
                          f"became {corpus.fingerprint[:12]}); start a new run")
    return runs.open_run(run_dir, settings.plots_dir)
