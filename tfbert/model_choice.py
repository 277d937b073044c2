"""Which of a run folder's exports infer.py answers with: the fastest to start that gives the model's labels.

A compact export (compact/, TFLite) starts in a fraction of a second without TensorFlow; the SavedModel
(saved_model/) needs TensorFlow but not transformers or the Keras model, and starts in about 60 % of the time of
the save_pretrained model (model/). At export time train.py records in compact/tfbert.json how often the
compact model's label matches the full model's on the test split (``test_label_agreement``); a run folder
answers with compact/ when that share is at least :data:`MIN_LABEL_AGREEMENT` and both name the same labels,
else with saved_model/ when it computes in float32 as model/ does in infer.py (the same weights in the same
precision), else with model/. Deciding reads small JSON files, so it happens before TensorFlow is imported.
An explicit export folder (model/, saved_model/, compact/) is used as given.

Example:
    >>> choice = choose_export("output/sms_spam/all-MiniLM-L6-v2/20261205_080000")  # doctest: +SKIP
    >>> choice.kind, choice.reason  # doctest: +SKIP
    ('compact', 'compact/ agrees with the full model on 0.998 of the test labels (>= 0.99), same labels')
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from tfbert.export_tflite import MODEL_FILE
from tfbert.model_settings import SETTINGS_FILE

MIN_LABEL_AGREEMENT = 0.99  # one answer in a hundred may differ from the full model's
AGREEMENT_KEY = "test_label_agreement"
SCORE_TOLERANCE = 0.05  # a regression score agrees within 5 % of the spread (std) of the model's test scores


@dataclass(frozen=True)
class Choice:
    """The folder to load, its kind (compact: needs no TensorFlow; saved_model; model; as_given: anything else)
    and why."""

    path: Path
    kind: str
    reason: str


def label_agreement(probabilities: np.ndarray, reference_labels: Sequence[str], label_names: Sequence[str]) -> float:
    """Share of rows whose most probable label (``label_names[argmax]``) equals ``reference_labels``' row.

    Example:
        >>> label_agreement(np.array([[0.9, 0.1], [0.4, 0.6]]), ["ham", "ham"], ["ham", "spam"])
        0.5
    """
    if len(reference_labels) != len(probabilities):
        raise ValueError(f"{len(probabilities)} predictions for {len(reference_labels)} reference labels")
    if not len(probabilities):
        return 0.0
    predicted = [label_names[i] for i in np.asarray(probabilities).argmax(axis=1)]
    return round(float(np.mean([p == r for p, r in zip(predicted, reference_labels)])), 4)


def answer_agreement(task: str, outputs: np.ndarray, reference: Sequence, label_names: Sequence[str],
                     thresholds: Optional[Sequence[float]] = None) -> float:
    """Share of rows whose answer from ``outputs`` is the ``reference`` row's (predictions_<split>.jsonl's
    ``predicted``): the same label (single-label), the same label set at ``thresholds`` (multi-label), or a score
    within :data:`SCORE_TOLERANCE` of the reference scores' standard deviation (regression).

    Example:
        >>> answer_agreement("multi_label", np.array([[0.9, 0.6], [0.2, 0.1]]), [["a", "b"], ["a"]], ["a", "b"],
        ...                  [0.5, 0.5])
        0.5
    """
    if task == "single_label":
        return label_agreement(outputs, reference, label_names)
    if len(reference) != len(outputs):
        raise ValueError(f"{len(outputs)} predictions for {len(reference)} reference answers")
    if not len(outputs):
        return 0.0
    if task == "multi_label":
        from tfbert.tasks import decide

        label_sets = [{name for name, on in zip(label_names, row) if on} for row in decide(outputs, thresholds)]
        same = [predicted == set(answer) for predicted, answer in zip(label_sets, reference)]
    else:
        scores, answers = np.asarray(outputs, np.float64).reshape(-1), np.asarray(reference, np.float64)
        same = np.abs(scores - answers) <= SCORE_TOLERANCE * (float(np.std(answers)) or 1.0)
    return round(float(np.mean(same)), 4)


def record_agreement(compact_dir: str | Path, agreement: float) -> None:
    """Add ``test_label_agreement`` to compact/tfbert.json (rewritten atomically)."""
    from tfbert.runs import write_json

    path = Path(compact_dir) / SETTINGS_FILE
    write_json(path, {**json.loads(path.read_text(encoding="utf-8")), AGREEMENT_KEY: agreement})


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _model_labels(model_dir: Path) -> list[str]:
    """model/'s labels: its tfbert.json, else its config.json's id2label."""
    labels = _read(model_dir / SETTINGS_FILE).get("labels")
    if labels:
        return list(labels)
    id2label = _read(model_dir / "config.json").get("id2label") or {}
    return [id2label[key] for key in sorted(id2label, key=int)]


def _compact_refusal(run: Path) -> Optional[str]:
    """Why the run's compact/ may not answer for it (None when it may)."""
    compact = run / "compact"
    if not (compact / MODEL_FILE).is_file():
        return "the run has no compact export (train with --export_tflite)"
    settings = _read(compact / SETTINGS_FILE)
    agreement = settings.get(AGREEMENT_KEY)
    if agreement is None:
        return "compact/ records no test label agreement with the full model (exported before tfbert measured it)"
    if agreement < MIN_LABEL_AGREEMENT:
        return f"compact/ agrees with the full model on {agreement:.3f} of the test labels (< {MIN_LABEL_AGREEMENT})"
    labels, model_labels = list(settings.get("labels") or []), _model_labels(run / "model")
    if labels != model_labels:
        return f"compact/'s labels {labels} differ from model/'s {model_labels}"
    return None


def _saved_model_refusal(run: Path) -> Optional[str]:
    """Why the run's saved_model/ may not answer in model/'s place (None when it may): it must compute in
    float32, as model/ does in infer.py. A bfloat16 export rounds differently and may flip a close label."""
    from tfbert.errors import TfbertError
    from tfbert.export import EXTRA, METADATA
    from tfbert.model_settings import resolve_version

    try:
        version = resolve_version(run / "saved_model")
    except TfbertError:
        return "the run has no saved_model/"
    policy = _read(version / EXTRA / METADATA).get("compute_policy")
    if policy != "float32":
        return f"saved_model/ computes in {policy or 'an unrecorded precision'}, model/ in float32"
    return None


def choose_export(path: str | Path, explain: bool = False) -> Choice:
    """The export infer.py loads for ``path``: for a run folder compact/, saved_model/ or model/ (see the
    module's rules), anything else as given (kind compact when it is a compact export). ``explain`` (integrated
    gradients) needs model/.

    Example:
        >>> choose_export("output/run/saved_model").kind  # doctest: +SKIP
        'as_given'
    """
    path = Path(path)
    if not (path / "model" / "config.json").is_file():
        kind = "compact" if (path / MODEL_FILE).is_file() else "as_given"
        return Choice(path, kind, f"{path} is not a run folder: used as given")
    refusal = "--explain needs model/" if explain else _compact_refusal(path)
    if refusal is None:
        agreement = _read(path / "compact" / SETTINGS_FILE)[AGREEMENT_KEY]
        return Choice(path / "compact", "compact", f"compact/ agrees with the full model on {agreement:.3f} of the "
                      f"test labels (>= {MIN_LABEL_AGREEMENT}), same labels")
    saved_model_refusal = "" if explain else _saved_model_refusal(path)
    if saved_model_refusal is None:
        return Choice(path / "saved_model", "saved_model",
                      f"{refusal}; saved_model/ computes in float32 as model/ does, and starts faster")
    return Choice(path / "model", "model", f"{refusal}; {saved_model_refusal}" if saved_model_refusal else refusal)


def choose_served_export(path: str | Path, export: str = "auto") -> Choice:
    """The export serve.py serves for ``path`` (``export``: auto, saved_model or compact).

    For a run folder, auto takes compact/ when it may answer for the run (the rules above), else saved_model/;
    any other folder is served as given, as a compact export or a SavedModel. Raises TfbertError when the asked-for
    export is not there.

    Example:
        >>> choose_served_export("output/run", "saved_model").path.name  # doctest: +SKIP
        'saved_model'
    """
    from tfbert.errors import TfbertError

    path = Path(path)
    if not (path / "model" / "config.json").is_file():
        kind = "compact" if (path / MODEL_FILE).is_file() else "saved_model"
        path = path / "saved_model" if kind == "saved_model" and (path / "saved_model").is_dir() else path
        if export not in ("auto", kind):
            raise TfbertError(f"--export {export}: {path} is a {kind.replace('_', ' ')} export; give its run folder "
                              f"or the {export} folder itself")
        return Choice(path, kind, "served as given")
    refusal = _compact_refusal(path) if export == "auto" else f"--export {export}"
    if export == "compact" or refusal is None:
        if not (path / "compact" / MODEL_FILE).is_file():
            raise TfbertError(f"--export compact: {path} has no compact export; train with --export_tflite "
                              "or use --export saved_model")
        reason = "--export compact" if refusal else choose_export(path).reason
        return Choice(path / "compact", "compact", reason)
    if not (path / "saved_model").is_dir():
        raise TfbertError(f"--model {path}: the run has no saved_model/ ({refusal}); point --model at an export")
    return Choice(path / "saved_model", "saved_model", refusal)
