"""Each figure of a run is a real PNG of the expected size; the confusion matrix shows the counts."""

from __future__ import annotations

import numpy as np
import pytest

from tfbert import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(path) -> tuple[int, int]:
    """Width and height in pixels, from the PNG's IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_curves_are_two_pngs(tmp_path):
    history = {"loss": [1.0, 0.6, 0.4], "val_loss": [0.9, 0.7, 0.65], "accuracy": [0.5, 0.7, 0.8],
               "val_accuracy": [0.55, 0.7, 0.75], "val_macro_f1": [0.5, 0.68, 0.74]}
    paths = plots.plot_curves(history, tmp_path)
    assert set(paths) == {"loss", "metrics"}
    for name, path in paths.items():
        assert path == tmp_path / f"{name}.png"
        assert _png_size(path) == (720, 480)  # 6 x 4 inches at 120 dpi
        assert path.stat().st_size > 5000


def test_curves_of_one_epoch_without_validation(tmp_path):
    paths = plots.plot_curves({"loss": [0.7], "accuracy": [0.6]}, tmp_path)
    assert all(_png_size(path) == (720, 480) for path in paths.values())


def test_confusion_matrix_png_and_its_counts(tmp_path):
    confusion = [[5, 1, 0], [2, 7, 1], [0, 0, 9]]
    labels = ["neg", "neu", "pos"]
    path = plots.plot_confusion(confusion, labels, tmp_path, "validation")
    assert path == tmp_path / "confusion_matrix_validation.png"
    assert _png_size(path) == (1200, 600)  # two 5 x 5 inch heatmaps at 120 dpi
    figure = plots.confusion_figure(confusion, labels, "validation")
    counts, recall = figure.axes
    assert [text.get_text() for text in counts.texts] == [str(n) for row in confusion for n in row]
    assert [text.get_text() for text in recall.texts][:3] == ["0.83", "0.17", "0.00"]
    assert [label.get_text() for label in counts.get_xticklabels()] == labels
    assert counts.get_title() == "validation confusion matrix, counts"
    plots._pyplot().close(figure)


def test_lengths_histogram(tmp_path):
    path = plots.plot_lengths(np.array([5, 9, 12, 30, 64, 200]), 128, tmp_path)
    assert path == tmp_path / "lengths.png" and _png_size(path) == (720, 480)
    assert path.stat().st_size > 5000


@pytest.mark.parametrize("n_labels", [2, 12])
def test_confusion_figure_grows_with_the_labels(tmp_path, n_labels):
    labels = [f"class_{i}" for i in range(n_labels)]
    path = plots.plot_confusion(np.eye(n_labels, dtype=int).tolist(), labels, tmp_path)
    width, height = _png_size(path)
    assert width == 2 * height and height == int(120 * max(5.0, 0.6 * n_labels + 3))
