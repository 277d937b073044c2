"""Score a trained model on labelled data, as a run scores its test split: evaluate.py's steps.

    model (run | model/ | SavedModel | compact/) -> predictor
    data (--test_file | a preset's test split) -> texts and labels -> label ids by the model's label names
      -> probabilities -> metrics, per-class report, confusion matrix, errors, predictions
      -> <run>/evaluations/<data>_<date>_<time>/ (metrics.json, evaluation.json, report.md, ...)

Example:
    >>> from tfbert.cli import parse_evaluate_args
    >>> config = parse_evaluate_args(["--model", "output/demo_reviews/all-MiniLM-L6-v2/20261123_101500",
    ...                               "--test_file", "new.jsonl"])  # doctest: +SKIP
    >>> evaluate_model(config)["macro_f1"]  # doctest: +SKIP
    0.87
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from tfbert import runs
from tfbert.errors import TfbertError
from tfbert.command_configs import EvaluateConfig

logger = logging.getLogger(__name__)

EVALUATIONS_DIR = "evaluations"
SPLIT = "test"  # the evaluation's files are named as a run's test files: predictions_test.jsonl, ...


@dataclass
class LabelledData:
    """The examples to score, with their labels as the data writes them, and where they came from."""

    name: str
    source: str
    fingerprint: str
    texts: list[str]
    labels: list[str]
    row_ids: list[int]
    pairs: Optional[list[str]] = None


@dataclass
class GoldLabels:
    """Each row's label as an id of ``names``: the model's labels, then any the model lacks (sorted)."""

    ids: np.ndarray
    names: list[str]
    unknown: dict[str, int] = field(default_factory=dict)  # label the model lacks -> rows


def evaluate_model(config: EvaluateConfig, report=print) -> dict:
    """Score ``config.model`` on ``config``'s labelled data; write the evaluation folder; return its summary.

    The data is read and its labels checked against the model's before anything is written.
    """
    from tfbert import inputs, runtime, tasks
    from tfbert.predictors import load_predictor

    runtime.quiet_libraries()
    data = load_labelled_data(config)
    model_path = Path(config.model)
    predictor = load_predictor(str(model_path))
    tasks.require(getattr(predictor, "task", "single_label"), ("single_label",), "evaluate.py")  # see docs/tasks.md
    gold = gold_labels(data.labels, list(predictor.labels), config.data_flag, config.allow_unknown_labels)
    inputs.check_pairs(model_path, data.pairs)
    _set_batch_size(predictor, config.batch_size or _run_batch_size(model_path, predictor))
    report(f"data: {data.name} ({len(data.texts)} rows from {data.source}); model: {model_path} "
           f"({type(predictor).__name__})")
    probabilities = predictor.predict(data.texts, data.pairs)
    evaluation = score(probabilities, gold, data, config.top_errors)
    folder = create_evaluation_folder(config, model_path, data.name)
    return write_evaluation(folder, config, model_path, predictor, data, gold, probabilities, evaluation)


def load_labelled_data(config: EvaluateConfig) -> LabelledData:
    """--test_file, read exactly as training reads its files, or the test split of the --dataset preset."""
    from tfbert.data.corpus import read_labelled_file
    from tfbert.data.files import file_fingerprint

    if config.test_file:
        table = read_labelled_file(config.test_file, config.data_config(), "--test_file")
        path = Path(config.test_file)
        return LabelledData(
            name=path.stem or path.name, source=str(path), fingerprint=file_fingerprint(path),
            texts=table["text"].astype(str).tolist(), labels=[str(v).strip() for v in table["label"]],
            row_ids=[int(r) for r in table["row_id"]],
            pairs=table["text_pair"].astype(str).tolist() if "text_pair" in table.columns else None,
        )
    return _preset_test_split(config)


def _preset_test_split(config: EvaluateConfig) -> LabelledData:
    from tfbert.data.presets import load_preset

    splits = load_preset(config.dataset, data_dir=config.data_dir, label_scheme=config.label_scheme)
    if "test" not in splits:
        raise TfbertError(f"--dataset {config.dataset}: the preset has no test split; give --test_file instead")
    split = splits["test"]
    names = split.features["label"].names
    return LabelledData(
        name=config.dataset, source=f"preset {config.dataset} (test)" + (f" ({config.data_dir})" if config.data_dir
                                                                           else ""),
        fingerprint=split._fingerprint,  # what training records for a preset (datasets' content digest)
        texts=list(split["text"]), labels=[names[i] for i in split["label"]], row_ids=list(range(len(split))),
        pairs=list(split["text_pair"]) if "text_pair" in split.column_names else None,
    )


def gold_labels(values: list[str], model_labels: list[str], where: str, allow_unknown: bool) -> GoldLabels:
    """Map the data's labels onto the model's by name (or, when none is a name, integer labels by position, as
    training maps them under --label_names); labels the model lacks stop here unless ``allow_unknown``.

    Example:
        >>> gold_labels(["pos", "neg", "meh"], ["neg", "pos"], "--test_file x", True).unknown
        {'meh': 1}
    """
    index = {name: i for i, name in enumerate(model_labels)}
    if not any(v in index for v in values) and all(v.isdigit() and int(v) < len(model_labels) for v in values):
        return GoldLabels(ids=np.array([int(v) for v in values], dtype=np.int64), names=list(model_labels))
    missing = [v for v in values if v not in index]
    unknown = {label: missing.count(label) for label in sorted(set(missing))}
    if unknown and not allow_unknown:
        shown = ", ".join(f"{label!r} ({n} rows)" for label, n in list(unknown.items())[:5])
        raise TfbertError(f"{where}: label(s) {shown} are not among the model's labels ({', '.join(model_labels)}); "
                          "fix or drop those rows, or pass --allow_unknown_labels to score them as errors")
    names = list(model_labels) + list(unknown)
    index.update({label: len(model_labels) + i for i, label in enumerate(unknown)})
    return GoldLabels(ids=np.array([index[v] for v in values], dtype=np.int64), names=names, unknown=unknown)


def score(probabilities: np.ndarray, gold: GoldLabels, data: LabelledData, top_errors: int):
    """Metrics, report, confusion matrix and errors; labels the model lacks are classes it never predicts, so
    their rows are errors, and up to ``top_errors`` of them are listed in errors marked ``unknown_label``."""
    from tfbert.evaluation import evaluate_predictions

    padded = _with_unknown_columns(probabilities, len(gold.names))
    evaluation = evaluate_predictions(padded, gold.ids, gold.names, texts=data.texts, row_ids=data.row_ids,
                                      top_errors=top_errors)
    if gold.unknown:
        evaluation.metrics["unknown_labels"] = dict(gold.unknown)
        evaluation.errors = _errors_with_unknown_rows(evaluation.errors, padded, gold, data, top_errors)
    return evaluation


def _with_unknown_columns(probabilities: np.ndarray, n_labels: int) -> np.ndarray:
    extra = n_labels - probabilities.shape[1]
    return np.pad(probabilities, ((0, 0), (0, extra))) if extra else probabilities


def _errors_with_unknown_rows(errors: list[dict], padded: np.ndarray, gold: GoldLabels, data: LabelledData,
                              top_errors: int) -> list[dict]:
    n_model = padded.shape[1] - len(gold.unknown)
    listed = {error["row_id"] for error in errors}
    rows = np.flatnonzero(gold.ids >= n_model)
    predicted = padded[:, :n_model].argmax(axis=1)
    confidence = padded[np.arange(len(padded)), predicted]
    extra = [i for i in rows[np.argsort(-confidence[rows], kind="stable")][:top_errors]
             if data.row_ids[i] not in listed]
    errors = errors + [{
        "row_id": data.row_ids[i], "text": data.texts[i], "label": gold.names[gold.ids[i]],
        "predicted": gold.names[predicted[i]], "confidence": float(confidence[i]),
        "probabilities": {name: float(p) for name, p in zip(gold.names, padded[i])},
    } for i in extra]
    for error in errors:
        if error["label"] in gold.unknown:
            error["unknown_label"] = True
    return errors


def owning_run(model_path: Path) -> Optional[Path]:
    """The run folder holding ``model_path`` (itself, model/, saved_model/<v>/ or compact/), or None."""
    resolved = model_path.resolve()
    for folder in (resolved, *list(resolved.parents)[:3]):
        if (folder / runs.STATUS_FILE).is_file() and (folder / "config.json").is_file():
            return folder
    return None


def _run_batch_size(model_path: Path, predictor) -> Optional[int]:
    """A run's Keras model predicts in the batches its run scored the test split with (2 x --batch_size), so
    that the padding, and with it every probability, is the same; other predictors keep their own."""
    from tfbert.predictors import KerasPredictor

    run = owning_run(model_path)
    if run is None or not isinstance(predictor, KerasPredictor):
        return None
    try:
        settings = json.loads((run / "config.json").read_text(encoding="utf-8"))["settings"]
        return 2 * int(settings["training"]["batch_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _set_batch_size(predictor, batch_size: Optional[int]) -> None:
    if batch_size and hasattr(predictor, "batch_size"):
        predictor.batch_size = batch_size


def create_evaluation_folder(config: EvaluateConfig, model_path: Path, data_name: str,
                             now: Optional[_dt.datetime] = None) -> Path:
    """A new folder <run>/evaluations/<data>_<date>_<time>/ (or under --output_dir, or next to a model outside
    a run folder); an existing one is never reused."""
    run = owning_run(model_path)
    if config.output_dir:
        base = Path(config.output_dir)
    else:
        base = (run if run else model_path.resolve().parent) / EVALUATIONS_DIR
    stamp = f"{runs.safe_name(data_name)}_{(now or _dt.datetime.now()).strftime('%Y%m%d_%H%M%S')}"
    for attempt in range(100):
        folder = base / (stamp if attempt == 0 else f"{stamp}_{attempt}")
        try:
            folder.mkdir(parents=True, exist_ok=False)
            return folder
        except FileExistsError:
            continue
        except OSError as error:
            raise TfbertError(f"--output_dir {base}: cannot create {folder} ({error.strerror})") from None
    raise TfbertError(f"--output_dir {base}: too many evaluations started this second")


def write_evaluation(folder: Path, config: EvaluateConfig, model_path: Path, predictor, data: LabelledData,
                     gold: GoldLabels, probabilities: np.ndarray, evaluation) -> dict:
    """The files a run writes for its test split, plus evaluation.json (what was scored), report.md and
    report.html."""
    from tfbert import plots
    from tfbert.evaluation import prediction_rows, write_evaluation_files
    from tfbert.html_report import write_html

    write_evaluation_files(folder, {SPLIT: evaluation},
                           {SPLIT: prediction_rows(probabilities, gold.ids, gold.names, data.row_ids)})
    figure = plots.plot_confusion(evaluation.confusion, gold.names, folder, SPLIT)
    record = _record(config, model_path, predictor, data)
    runs.write_json(folder / "evaluation.json", record)
    metrics = {"test": evaluation.metrics, "confusion_test": evaluation.confusion,
               "unknown_labels": dict(gold.unknown), "data": record["data"]}
    runs.write_json(folder / "metrics.json", metrics)
    runs.write_text(folder / "report.md", _report(folder, record, evaluation, figure, owning_run(model_path)))
    write_html(folder / "report.html", f"evaluation · {record['data']['name']}", metrics, label_names=gold.names,
               confusion=evaluation.confusion, errors=evaluation.errors, figures={"confusion": figure},
               subtitle=f"{record['model']} on {record['data']['name']}")
    return {"evaluation_dir": str(folder), "n": evaluation.metrics["n"], "accuracy": evaluation.metrics["accuracy"],
            "macro_f1": evaluation.metrics["macro_f1"],
            **({"unknown_label_rows": sum(gold.unknown.values())} if gold.unknown else {})}


def _record(config: EvaluateConfig, model_path: Path, predictor, data: LabelledData) -> dict:
    from tfbert.diagnose import library_versions

    return {
        "time": _dt.datetime.now().isoformat(timespec="seconds"),
        "model": str(model_path),
        "predictor": type(predictor).__name__,
        "run": str(owning_run(model_path) or ""),
        "labels": list(predictor.labels),
        "data": {"name": data.name, "source": data.source, "fingerprint": data.fingerprint, "rows": len(data.texts),
                 "text_pair": data.pairs is not None},
        "settings": dataclasses.asdict(config),
        "versions": {name: found for name, found in library_versions().items() if found},
    }


_ROWS = (("accuracy", "accuracy"), ("macro_f1", "macro F1"), ("macro_precision", "macro precision"),
         ("macro_recall", "macro recall"), ("weighted_f1", "weighted F1"), ("loss", "loss"))


def _report(folder: Path, record: dict, evaluation, figure: Path, run: Optional[Path]) -> str:
    """report.md: what was scored, the scores (beside the run's own test scores when there is a run), per class,
    the most confident errors, the confusion matrix."""
    run_test = _run_test_metrics(run)
    data, metrics = record["data"], evaluation.metrics
    lines = [f"# Evaluation on {data['name']}", "",
             f"Model `{record['model']}` ({record['predictor']}) on {data['rows']} rows of `{data['source']}` "
             f"(SHA-256 `{data['fingerprint'][:16]}…`), {record['time']}.", ""]
    if metrics.get("unknown_labels"):
        shown = ", ".join(f"{label} ({n})" for label, n in metrics["unknown_labels"].items())
        lines += [f"Labels the model does not know, scored as errors: {shown}.", ""]
    lines += ["## Scores", "", "| metric | this data |" + (" run's test split |" if run_test else ""),
              "|---|---|" + ("---|" if run_test else "")]
    for key, name in _ROWS:
        lines.append(f"| {name} | {metrics[key]:.4f} |" + (f" {run_test[key]:.4f} |" if key in run_test else ""))
    lines += ["", "## Per class", "", "```", evaluation.report.rstrip(), "```", "", "## Most confident errors", ""]
    if evaluation.errors:
        lines += ["| true | predicted | confidence | text |", "|---|---|---|---|"]
        for error in evaluation.errors[:10]:
            text = error["text"].replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {error['label']} | {error['predicted']} | {error['confidence']:.3f} | "
                         f"{text[:160]}{'…' if len(text) > 160 else ''} |")
        lines.append("\nAll listed in `errors.jsonl`.")
    else:
        lines.append("None: every example was classified correctly.")
    lines += ["", f"![confusion]({os.path.relpath(figure, folder)})", "",
              "Files: `metrics.json`, `evaluation.json` (model, data and its fingerprint, settings, versions), "
              "`classification_report.txt`, `errors.jsonl`, `predictions_test.jsonl`.", ""]
    return "\n".join(lines)


def _run_test_metrics(run: Optional[Path]) -> dict:
    try:
        return json.loads((run / "metrics.json").read_text(encoding="utf-8"))["test"] if run else {}
    except (OSError, ValueError, KeyError):
        return {}
