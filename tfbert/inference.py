"""Predict labels for raw texts from a run folder, a save_pretrained folder, a SavedModel, a compact
TFLite export or a server.

Every predictor has ``labels`` and ``predict(texts, text_pairs=None) -> probabilities [n, classes]``.

Example:
    >>> predictor = load_predictor("output/demo_reviews/all-MiniLM-L6-v2/20261123_101500")  # doctest: +SKIP
    >>> predictor.predict(["great value, works perfectly"]).argmax(axis=1)  # doctest: +SKIP
    array([2])
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from tfbert.errors import TfbertError


class KerasPredictor:
    """Predictions from a save_pretrained folder (tf_model.h5, config, tokenizer, tfbert.json)."""

    def __init__(self, folder: str | Path, batch_size: int = 64):
        from tfbert import modeling

        folder = Path(folder)
        self.model = modeling.load_classifier(folder)
        settings = modeling.read_settings(folder)
        self.tokenizer = modeling.load_tokenizer(folder, settings.get("word_tokenizer"))
        self.max_length = int(settings.get("max_length") or modeling.model_max_length(folder, self.tokenizer))
        self.truncation = settings.get("truncation", "head")
        self.batch_size = batch_size
        config = self.model.config
        self.labels = [config.id2label[i] for i in range(config.num_labels)]

    def predict(self, texts: list[str], text_pairs: Optional[list[str]] = None) -> np.ndarray:
        import datasets

        from tfbert.data.pipeline import encode_batch
        from tfbert.evaluation import predict_probabilities

        if not texts:
            return np.zeros((0, len(self.labels)), np.float32)
        encoded = encode_batch(self.tokenizer, list(texts), list(text_pairs) if text_pairs else None,
                               self.max_length, self.truncation, count_tokens=False)
        return predict_probabilities(self.model, datasets.Dataset.from_dict(encoded), self.tokenizer, self.batch_size)


def _is_saved_model(path: Path) -> bool:
    return (path / "saved_model.pb").is_file() or any(
        child.is_dir() and child.name.isdigit() and (child / "saved_model.pb").is_file() for child in path.iterdir()
    )


def load_predictor(model: Optional[str] = None, output_dir: str = "output", server: Optional[str] = None):
    """The predictor for ``--model`` (run folder, model folder, SavedModel or compact export), ``--server`` URL,
    or the newest run."""
    if server:
        from tfbert.client import ServerPredictor

        return ServerPredictor(server)
    from tfbert.runs import newest_run

    path = Path(model) if model else newest_run(output_dir)
    if not path.exists():
        raise TfbertError(f"--model {path}: no such folder; give a run folder, a model folder, a SavedModel "
                          "or a compact/ folder")
    if not path.is_dir():
        raise TfbertError(f"--model {path}: is a file; give a run folder, a model folder, a SavedModel "
                          "or a compact/ folder")
    from tfbert.export_tflite import MODEL_FILE, TFLitePredictor

    if (path / MODEL_FILE).is_file():  # a compact export
        return TFLitePredictor(path)
    if (path / "model" / "config.json").is_file():  # a run folder
        return KerasPredictor(path / "model")
    if (path / "config.json").is_file():
        return KerasPredictor(path)
    if _is_saved_model(path):
        from tfbert.export import SavedModelPredictor

        return SavedModelPredictor(path)
    raise TfbertError(
        f"--model {path}: not a model (no config.json, model/ or saved_model.pb inside); "
        "give a run folder, its model/ folder, a SavedModel folder or a compact/ folder"
    )
