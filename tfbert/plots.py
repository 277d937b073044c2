"""Figures of a run: training curves, confusion matrices, token-length histogram. Headless (Agg).

Example:
    >>> paths = plot_run(history, confusion, label_names, n_tokens, max_length, folder)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: dict, folder: Path) -> dict[str, Path]:
    """loss.png (train vs validation) and metrics.png (train accuracy, validation accuracy and macro-F1) per epoch."""
    plt = _pyplot()
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    figures = {
        "loss": ("cross-entropy", "Loss", (("loss", "train loss"), ("val_loss", "validation loss"))),
        "metrics": ("score", "Accuracy and macro-F1", (("accuracy", "train accuracy"),
                    ("val_accuracy", "validation accuracy"), ("val_macro_f1", "validation macro-F1"),
                    ("val_micro_f1", "validation micro-F1"), ("val_pearson", "validation Pearson r"))),
    }
    paths = {}
    for name, (ylabel, title, series) in figures.items():
        figure, axis = plt.subplots(figsize=(6, 4))
        for key, label in series:
            if key in history:
                axis.plot(epochs, history[key], marker="o", label=label)
        axis.set(xlabel="epoch", ylabel=ylabel, title=title)
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.legend()
        figure.tight_layout()
        paths[name] = folder / f"{name}.png"
        figure.savefig(paths[name], dpi=120)
        plt.close(figure)
    return paths


def plot_confusion(confusion: list[list[int]], label_names: list[str], folder: Path, split: str = "test") -> Path:
    """Seaborn heatmaps of the confusion matrix, counts and rows normalised to recall, as
    ``folder/confusion_matrix_<split>.png``."""
    plt = _pyplot()
    figure = confusion_figure(confusion, label_names, split)
    path = folder / f"confusion_matrix_{split}.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def confusion_figure(confusion: list[list[int]], label_names: list[str], split: str = "test"):
    """The figure of :func:`plot_confusion`: two heatmaps whose cells are annotated with the counts and the recall.

    Example:
        >>> figure = confusion_figure([[5, 1], [0, 4]], ["ham", "spam"])  # doctest: +SKIP
        >>> [t.get_text() for t in figure.axes[0].texts]  # doctest: +SKIP
        ['5', '1', '0', '4']
    """
    plt = _pyplot()
    import seaborn as sns

    counts = np.asarray(confusion)
    normalised = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = max(5.0, 0.6 * len(label_names) + 3)
    figure, axes = plt.subplots(1, 2, figsize=(2 * size, size))
    for axis, values, title, fmt in (
        (axes[0], counts, "counts", "d"),
        (axes[1], normalised, "row-normalised (recall)", ".2f"),
    ):
        sns.heatmap(values, annot=True, fmt=fmt, cmap="Blues", square=True, cbar=False,
                    xticklabels=label_names, yticklabels=label_names, ax=axis)
        axis.set(xlabel="predicted", ylabel="true", title=f"{split} confusion matrix, {title}")
        axis.tick_params(axis="x", rotation=45)
        axis.tick_params(axis="y", rotation=0)
    figure.tight_layout()
    return figure


def plot_lengths(n_tokens: np.ndarray, max_length: int, folder: Path) -> Path:
    """Histogram of training texts' lengths in tokens, with the --max_length cut and the share beyond it."""
    plt = _pyplot()
    n_tokens = np.asarray(n_tokens)
    truncated = float((n_tokens > max_length).mean()) if len(n_tokens) else 0.0
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.hist(n_tokens, bins=min(50, max(10, len(np.unique(n_tokens)))), color="tab:blue", alpha=0.8)
    axis.axvline(max_length, color="tab:red", linestyle="--", label=f"max_length {max_length} ({truncated:.1%} truncated)")
    axis.set(xlabel="tokens per example (before truncation)", ylabel="examples", title="Text length")
    axis.legend()
    figure.tight_layout()
    path = folder / "lengths.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
