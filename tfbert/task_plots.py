"""The test figures that depend on the task: the confusion matrix (single-label), label co-occurrence
(multi-label), predicted-vs-true scores and the residual histogram (regression). Headless (Agg).

Example:
    >>> path = plot_cooccurrence(np.array([[1, 1, 0], [1, 0, 0]]), ["a", "b", "c"], Path("plots"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tfbert.plots import _pyplot, plot_confusion


def cooccurrence(gold: np.ndarray) -> np.ndarray:
    """[labels, labels] counts of examples carrying both labels; the diagonal counts each label.

    Example:
        >>> cooccurrence(np.array([[1, 1, 0], [1, 0, 0]])).tolist()
        [[2, 1, 0], [1, 1, 0], [0, 0, 0]]
    """
    hot = (np.asarray(gold) > 0).astype(np.int64)
    return hot.T @ hot


def plot_cooccurrence(gold: np.ndarray, label_names: list[str], folder: Path, split: str = "train") -> Path:
    """A heatmap of :func:`cooccurrence` counts as ``folder/label_cooccurrence_<split>.png``."""
    plt = _pyplot()
    import seaborn as sns

    size = max(5.0, 0.6 * len(label_names) + 3)
    figure, axis = plt.subplots(figsize=(size, size))
    sns.heatmap(cooccurrence(gold), annot=True, fmt="d", cmap="Blues", square=True, cbar=False,
                xticklabels=label_names, yticklabels=label_names, ax=axis)
    axis.set(title=f"{split} label co-occurrence (diagonal: examples per label)")
    axis.tick_params(axis="x", rotation=45)
    figure.tight_layout()
    path = folder / f"label_cooccurrence_{split}.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_scores(gold: np.ndarray, predicted: np.ndarray, folder: Path, split: str = "test") -> Path:
    """Predicted against true scores (with the diagonal) beside the histogram of residuals (predicted - true),
    as ``folder/scores_<split>.png``."""
    plt = _pyplot()
    gold, predicted = np.asarray(gold, np.float64), np.asarray(predicted, np.float64)
    figure, (scatter, histogram) = plt.subplots(1, 2, figsize=(11, 4.5))
    scatter.scatter(gold, predicted, s=10, alpha=0.5)
    low, high = float(min(gold.min(), predicted.min())), float(max(gold.max(), predicted.max()))
    scatter.plot([low, high], [low, high], color="tab:red", linestyle="--", label="predicted = true")
    scatter.set(xlabel="true score", ylabel="predicted score", title=f"{split}: predicted vs true")
    scatter.legend()
    residuals = predicted - gold
    histogram.hist(residuals, bins=min(40, max(10, len(residuals) // 5)), color="tab:blue", alpha=0.8)
    histogram.axvline(0, color="tab:red", linestyle="--")
    histogram.set(xlabel="residual (predicted - true)", ylabel="examples",
                  title=f"{split} residuals: mean {residuals.mean():+.3f}, sd {residuals.std():.3f}")
    figure.tight_layout()
    path = folder / f"scores_{split}.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def run_figures(prepared, run_dir: Path, test, folder: Path) -> dict[str, Path]:
    """The task's figures of a run (``prepared``: tfbert.experiment.Prepared, ``test``: the test Evaluation);
    regression reads the scores from ``run_dir``/predictions_test.jsonl."""
    task = prepared.corpus.task
    if task == "multi_label":
        return {"cooccurrence": plot_cooccurrence(prepared.labels("train"), prepared.label_names, folder)}
    if task == "regression":
        rows = [json.loads(line) for line in (Path(run_dir) / "predictions_test.jsonl").read_text().splitlines()]
        return {"scores": plot_scores([r["label"] for r in rows], [r["predicted"] for r in rows], folder)}
    return {"confusion": plot_confusion(test.confusion, prepared.label_names, folder)}
