"""Sweeps and repeats: one normal run per grid point and seed, under one sweep folder; the point is chosen by
validation macro-F1 (mean over seeds), and test scores are reported for the chosen point only.

    python train.py --sweep lr=1e-5,3e-5,5e-5 --sweep batch_size=16,32 --seeds 1,2,3

    output/<dataset>/sweeps/<date>_<time>/      sweep.json, sweep.md
      <dataset>/<model>/<date>_<time>/          each point's run, a normal run folder (infer.py finds them)

Example:
    >>> plan = parse_sweep(["lr=1e-5,3e-5", "batch_size=16,32"], "1,2", default_seed=42)
    >>> len(plan.points()), plan.seeds
    (4, [1, 2])
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import itertools
import logging
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from tfbert import runs
from tfbert.config import (DEFAULT_DATASET, TRAIN_DESCRIPTION, DataConfig, ModelConfig, TrainConfig,
                           TrainingConfig, build_parser, parse_sections, validate)
from tfbert.errors import TfbertError

logger = logging.getLogger(__name__)

SWEEP_HELP = ("KEY=V1,V2,...: train one run per value of a train.py setting, e.g. lr=1e-5,3e-5 or "
              "model_name=A,B; repeat --sweep for a grid; the point with the best mean validation macro-F1 is chosen")
SEEDS_HELP = "comma-separated seeds, e.g. 1,2,3: repeat every run with each seed and report mean and standard deviation"
SELECTION = "the highest mean validation macro_f1 over seeds; test scores are reported for the chosen point only"
_SECTIONS = {"data": DataConfig, "model": ModelConfig, "training": TrainingConfig}
# Settings a sweep does not vary: the data and its splits (else validation scores are not comparable), where runs
# go and how they print (the sweep's own), and the seed (--seeds).
NOT_SWEPT = {"dataset", "data_dir", "train_file", "validation_file", "test_file", "text_column", "text_pair_column",
             "label_column", "columns", "label_names", "label_scheme", "split_ratio", "max_eval_samples", "dedupe",
             "cache_dir", "seed", "resume", "save_every", "baseline", "output_dir", "plots_dir", "quiet", "json",
             "verbose", "log_every"}


@dataclass
class SweepPlan:
    """The grid (setting -> values, in the order given) and the seeds every point is trained with."""

    grid: dict[str, list] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)

    def points(self) -> list[dict[str, Any]]:
        """Every combination of the grid's values, the first key varying slowest; [{}] for repeats only."""
        return [dict(zip(self.grid, values)) for values in itertools.product(*self.grid.values())]


def sweepable_fields() -> dict[str, tuple[str, Any, tuple]]:
    """Setting name -> (its section of TrainConfig, its type, its choices) for every setting a sweep may vary."""
    found = {}
    for section, cls in _SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name not in NOT_SWEPT:
                found[f.name] = (section, hints[f.name], tuple(f.metadata.get("choices", ())))
    return found


def parse_value(key: str, text: str, kind: Any, choices: tuple = ()) -> Any:
    """``text`` as a value of the setting ``key`` of type ``kind`` (int, float, bool, str, Optional[...]).

    Example:
        >>> parse_value("lr", "3e-5", float), parse_value("class_weight", "none", Optional[str])
        (3e-05, None)
    """
    text = text.strip()
    if typing.get_origin(kind) is typing.Union:
        if text.lower() == "none":
            return None
        kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
    try:
        if kind is bool:
            value = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}[text.lower()]
        else:
            value = kind(text)
    except (ValueError, KeyError):
        raise TfbertError(f"--sweep {key}: {text!r} is not a valid {getattr(kind, '__name__', kind)}") from None
    if choices and value not in choices:
        raise TfbertError(f"--sweep {key}: {text!r} is not one of {', '.join(map(str, choices))}")
    return value


def parse_sweep(specs: list[str], seeds: Optional[str], default_seed: int) -> Optional[SweepPlan]:
    """--sweep KEY=V1,V2 (repeated) and --seeds 1,2,3 as a plan, or None when neither is given; every problem
    is collected into one error that lists the settings a sweep may vary."""
    if not specs and not seeds:
        return None
    fields, plan, problems = sweepable_fields(), SweepPlan(), []
    for spec in specs:
        key, _, values = spec.partition("=")
        key = key.strip()
        texts = [v for v in values.split(",") if v.strip()]
        if key not in fields:
            problems.append(f"--sweep {spec}: {key!r} is not a setting a sweep can vary; use one of "
                            f"{', '.join(sorted(fields))}" + (" (seeds: --seeds)" if key == "seed" else ""))
        elif not texts:
            problems.append(f"--sweep {spec}: give values after '=', e.g. {key}=V1,V2")
        elif key in plan.grid:
            problems.append(f"--sweep {key} is given twice; give all its values in one --sweep {key}=V1,V2")
        else:
            try:
                plan.grid[key] = [parse_value(key, text, fields[key][1], fields[key][2]) for text in texts]
            except TfbertError as error:
                problems.append(str(error))
    plan.seeds, seed_problem = _parse_seeds(seeds, default_seed)
    problems += [seed_problem] if seed_problem else []
    if problems:
        raise TfbertError("; ".join(problems))
    return plan


def _parse_seeds(seeds: Optional[str], default_seed: int) -> tuple[list[int], str]:
    if not seeds:
        return [default_seed], ""
    try:
        values = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        values = []
    if not values or len(set(values)) != len(values):
        return [], f"--seeds {seeds}: give distinct integers separated by commas, e.g. 1,2,3"
    return values, ""


def parse_train_command(argv: Optional[list[str]] = None) -> tuple[TrainConfig, Optional[SweepPlan]]:
    """train.py's command line: the settings of one run, and the sweep plan when --sweep or --seeds is given.

    Example:
        >>> config, plan = parse_train_command(["--epochs", "1", "--sweep", "lr=1e-5,3e-5"])
        >>> plan.grid
        {'lr': [1e-05, 3e-05]}
    """
    parser = build_parser("train.py", TRAIN_DESCRIPTION)
    parser.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2", help=SWEEP_HELP)
    parser.add_argument("--seeds", default=None, metavar="S1,S2", help=SEEDS_HELP)
    data, model, training, extra = parse_sections(parser, argv)
    config = TrainConfig(data, model, training)
    validate(config)
    plan = parse_sweep(extra.sweep, extra.seeds, training.seed)
    if plan is not None and getattr(training, "resume", None):
        raise TfbertError("--resume continues one run; give it without --sweep/--seeds (a sweep's runs resume "
                          "one at a time with --resume RUN_FOLDER)")
    if plan is not None:
        point_configs(config, plan, Path(training.output_dir), Path(training.plots_dir))  # every point, checked now
    return config, plan


def point_config(base: TrainConfig, setting: dict[str, Any], seed: int, output_dir: Path,
                 plots_dir: Path) -> TrainConfig:
    """A normal run's settings: ``base`` with one grid point's values and seed, writing under the sweep folder."""
    fields = sweepable_fields()
    sections = {name: getattr(base, name) for name in _SECTIONS}
    for key, value in setting.items():
        section = fields[key][0]
        sections[section] = dataclasses.replace(sections[section], **{key: value})
    sections["training"] = dataclasses.replace(sections["training"], seed=seed, output_dir=str(output_dir),
                                               plots_dir=str(plots_dir))
    return TrainConfig(**sections)


def point_configs(base: TrainConfig, plan: SweepPlan, output_dir: Path, plots_dir: Path) -> list[TrainConfig]:
    """Every run of the sweep, validated together: one error lists the points with bad settings."""
    configs, problems = [], []
    for setting in plan.points():
        for seed in plan.seeds:
            config = point_config(base, setting, seed, output_dir, plots_dir)
            try:
                validate(config)
            except TfbertError as error:
                problems.append(f"{describe(setting) or 'the base settings'}: {error}")
            configs.append(config)
    if problems:
        raise TfbertError("; ".join(dict.fromkeys(problems)))
    return configs


def describe(setting: dict[str, Any]) -> str:
    """'lr=3e-05 batch_size=16' for a grid point."""
    return " ".join(f"{key}={value}" for key, value in setting.items())


def data_name(data: DataConfig) -> str:
    """The name the runs' folders get for this data (as load_corpus names it)."""
    return Path(data.train_file).stem if data.train_file else (data.dataset or DEFAULT_DATASET)


def run_sweep(base: TrainConfig, plan: SweepPlan, report=print) -> dict:
    """Train every point with every seed (each a normal run), choose the point, write sweep.json and sweep.md.

    sweep.json is rewritten after every run, so a sweep that stops leaves a record of the runs it finished.
    Tokenisation is shared: points with the same data settings read the tokenised splits from the cache.
    """
    from tfbert.experiment import train

    settings = base.training
    sweep = runs.create_run(settings.output_dir, settings.plots_dir, data_name(base.data), "sweeps")
    record = {"sweep_dir": str(sweep.path), "created": _dt.datetime.now().isoformat(timespec="seconds"),
              "command": sys.argv, "grid": plan.grid, "seeds": plan.seeds, "selection": SELECTION,
              "status": "running", "points": [], "chosen": None,
              "baseline": None}
    points, total = plan.points(), len(plan.points()) * len(plan.seeds)
    for number, setting in enumerate(points):
        run_dirs = []
        for seed in plan.seeds:
            report(f"sweep run {len(run_dirs) + number * len(plan.seeds) + 1}/{total}: "
                   f"{describe(setting) or 'base settings'} seed {seed}")
            summary = train(point_config(base, setting, seed, sweep.path, sweep.plots), report)
            run_dirs.append(summary["run_dir"])
            _release_model_memory()
            record["points"][number:] = [point_summary(setting, run_dirs)]
            write_sweep_files(sweep.path, record)
    record["chosen"] = choose(record["points"])
    record["baseline"] = baseline_scores(record["chosen"]["runs"])
    record["status"] = "finished"
    write_sweep_files(sweep.path, record)
    record["report"] = str(write_sweep_html(sweep, record))
    return record


def choose(points: list[dict]) -> dict:
    """The point with the highest mean validation macro-F1 (the first on a tie), with its test scores added; the
    other points' test scores are never read, so the choice cannot lean on the test split."""
    best = max(points, key=lambda point: point["validation"]["macro_f1"]["mean"])
    return {**best, "test": chosen_test_scores(best["runs"])}


def _release_model_memory() -> None:
    """Drop the finished run's graphs and weights before the next run builds its own."""
    import gc

    import tensorflow as tf

    tf.keras.backend.clear_session()
    gc.collect()


def mean_std(values: list[float]) -> dict:
    """{'mean', 'std' (sample standard deviation; 0 for one value), 'values'} of one metric over seeds.

    Example:
        >>> mean_std([0.8, 0.9])["mean"]
        0.85
    """
    array = np.asarray(values, dtype=np.float64)
    return {"mean": round(float(array.mean()), 6),
            "std": round(float(array.std(ddof=1)) if len(array) > 1 else 0.0, 6),
            "values": [round(float(v), 6) for v in array]}


def _run_metrics(run_dir: str) -> dict:
    import json

    return json.loads((Path(run_dir) / "metrics.json").read_text(encoding="utf-8"))


def point_summary(setting: dict[str, Any], run_dirs: list[str]) -> dict:
    """One grid point in sweep.json: its setting, runs, and validation scores over seeds (no test scores)."""
    validation = [_run_metrics(run)["validation"] for run in run_dirs]
    return {"setting": setting, "runs": run_dirs,
            "validation": {key: mean_std([m[key] for m in validation]) for key in ("macro_f1", "accuracy")}}


def chosen_test_scores(run_dirs: list[str]) -> dict:
    """Test scores over seeds of the chosen point's runs."""
    test = [_run_metrics(run)["test"] for run in run_dirs]
    return {key: mean_std([m[key] for m in test]) for key in ("macro_f1", "accuracy")}


def baseline_scores(run_dirs: list[str]) -> Optional[dict]:
    """The TF-IDF baseline's validation and test macro-F1 over the chosen point's runs (--baseline on), or None."""
    found = [_run_metrics(run).get("baseline") for run in run_dirs]
    if not all(found):
        return None
    return {split: {"macro_f1": mean_std([b[split]["macro_f1"] for b in found])} for split in ("validation", "test")}


def write_sweep_files(folder: Path, record: dict) -> None:
    """sweep.json (the whole record) and sweep.md (a table of the points, the chosen one marked)."""
    runs.write_json(folder / "sweep.json", record)
    runs.write_text(folder / "sweep.md", sweep_markdown(record))


def _pm(summary: dict) -> str:
    """The mean, with ± sd only when there is a spread to show (one seed has none)."""
    if len(summary["values"]) < 2:
        return f"{summary['mean']:.4f}"
    return f"{summary['mean']:.4f} ± {summary['std']:.4f}"


def _pm_html(summary: dict) -> str:
    from tfbert.html_report import format_metric

    spread = f" ± {format_metric(summary['std'])}" if len(summary["values"]) > 1 else ""
    return format_metric(summary["mean"]) + spread


def sweep_markdown(record: dict) -> str:
    """The human table of a sweep: validation scores of every point; test scores of the chosen one only."""
    chosen = record.get("chosen")
    lines = [f"# Sweep {Path(record['sweep_dir']).name}", "",
             f"Grid: {describe(record['grid']) or 'none'}; seeds {', '.join(map(str, record['seeds']))}. "
             f"Chosen by {record['selection']}.", "",
             "| point | validation macro-F1 | validation accuracy | runs |", "|---|---|---|---|"]
    for point in record["points"]:
        mark = " **(chosen)**" if chosen and point["setting"] == chosen["setting"] else ""
        runs_cell = ", ".join(f"`{Path(run).name}`" for run in point["runs"])
        lines.append(f"| {describe(point['setting']) or 'base settings'}{mark} | "
                     f"{_pm(point['validation']['macro_f1'])} | {_pm(point['validation']['accuracy'])} | {runs_cell} |")
    if chosen:
        lines += ["", f"Chosen: {describe(chosen['setting']) or 'base settings'} — test macro-F1 "
                      f"{_pm(chosen['test']['macro_f1'])}, test accuracy {_pm(chosen['test']['accuracy'])} "
                      f"(over {len(chosen['runs'])} seed(s)). Runs: " + ", ".join(f"`{r}`" for r in chosen["runs"])]
    if record.get("baseline"):
        lines += ["", f"TF-IDF baseline (same splits): validation macro-F1 "
                      f"{_pm(record['baseline']['validation']['macro_f1'])}, test macro-F1 "
                      f"{_pm(record['baseline']['test']['macro_f1'])}."]
    return "\n".join(lines) + "\n"


def summary_lines(record: dict) -> list[str]:
    """What train.py prints at the end of a sweep: each point's validation score, then the chosen point."""
    lines = [f"sweep  {record['sweep_dir']}"]
    for point in record["points"]:
        lines.append(f"  {describe(point['setting']) or 'base settings'}: validation macro-F1 "
                     f"{_pm(point['validation']['macro_f1'])}")
    chosen = record["chosen"]
    lines.append(f"chosen {describe(chosen['setting']) or 'base settings'} by validation macro-F1 "
                 f"{_pm(chosen['validation']['macro_f1'])}: test macro-F1 {_pm(chosen['test']['macro_f1'])}, "
                 f"test accuracy {_pm(chosen['test']['accuracy'])}")
    if record.get("baseline"):
        lines.append(f"  TF-IDF baseline: test macro-F1 {_pm(record['baseline']['test']['macro_f1'])}")
    lines += [f"  run {run}" for run in chosen["runs"]]
    return lines


FIGURE_FILES = {"loss": "loss.png", "metrics": "metrics.png", "confusion": "confusion_matrix_test.png",
                "lengths": "lengths.png"}


def write_sweep_html(sweep: runs.Run, record: dict) -> Path:
    """report.html of a finished sweep: every point's validation scores over seeds, then the chosen point's first
    run in full (the only test scores the sweep shows).

    Example:
        >>> write_sweep_html(sweep, record)  # doctest: +SKIP
        PosixPath('output/sms_spam/sweeps/20261204_180000/report.html')
    """
    import json

    from html import escape

    from tfbert.html_report import html_table, write_html

    chosen = record["chosen"]
    rows = [[escape(describe(point["setting"]) or "base settings") + (" (chosen)" if point["runs"] == chosen["runs"]
                                                                      else ""),
             *(_pm_html(point["validation"][key]) for key in ("macro_f1", "accuracy")), str(len(point["runs"]))]
            for point in record["points"]]
    table = ("<h2>Points (validation, mean ± sd over seeds)</h2>"
             + html_table(["setting", "macro F1", "accuracy", "runs"], rows, (0,)))
    run_dir = Path(chosen["runs"][0])
    plots = sweep.plots / run_dir.relative_to(sweep.path)
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    figures = {name: plots / file for name, file in FIGURE_FILES.items() if (plots / file).is_file()}
    return write_html(sweep.path / "report.html", f"sweep {sweep.run_id}", metrics, label_names=config["labels"],
                      confusion=metrics.get("confusion_test"), figures=figures, config=config, extra=table,
                      subtitle=f"chosen: {describe(chosen['setting']) or 'base settings'}, its first run below "
                               f"({run_dir.name})")
