"""Every predictor keeps one protocol, and load_predictor picks the right one for each kind of folder (or a URL)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_client import LABELS, TEXTS, serve_in_thread

from tfbert import modeling
from tfbert.errors import TfbertError
from tfbert.export import export_saved_model
from tfbert.export_tflite import export_tflite
from tfbert.model_settings import ModelSettings
from tfbert.predictors import (KerasPredictor, Predictor, SavedModelPredictor, ServerPredictor, TFLitePredictor,
                               load_predictor)


@pytest.fixture(scope="module")
def run(tiny_model_dir, tmp_path_factory):
    """A run folder as train.py leaves it: model/, saved_model/1 and 2, compact/."""
    folder = tmp_path_factory.mktemp("predictors") / "run"
    model = modeling.load_for_training(tiny_model_dir, list(LABELS.values()))
    tokenizer = modeling.load_tokenizer(tiny_model_dir)
    settings = ModelSettings(labels=list(LABELS.values()), max_length=16, truncation="head", head_hidden_size=0,
                             uses_token_type_ids=True)
    modeling.save_classifier(model, tokenizer, folder / "model", settings)
    for _ in range(2):
        export_saved_model(model, tokenizer, id2label=LABELS, max_length=16, base_dir=folder / "saved_model")
    export_tflite(model, tokenizer, settings, folder / "compact")
    return folder


@pytest.mark.slow  # exports a SavedModel (and a compact model) first
def test_load_predictor_picks_the_predictor_for_each_folder(run):
    assert isinstance(load_predictor(str(run)), KerasPredictor)  # a run folder: its model/
    assert isinstance(load_predictor(str(run / "model")), KerasPredictor)
    newest = load_predictor(str(run / "saved_model"))  # a base path: the newest version
    assert isinstance(newest, SavedModelPredictor) and newest.path == run / "saved_model" / "2"
    first = load_predictor(str(run / "saved_model" / "1"))
    assert isinstance(first, SavedModelPredictor) and first.path == run / "saved_model" / "1"
    assert isinstance(load_predictor(str(run / "compact")), TFLitePredictor)
    assert isinstance(load_predictor(server="http://127.0.0.1:8501/v1/models/demo"), ServerPredictor)


@pytest.mark.slow  # exports a SavedModel (and a compact model) first
def test_load_predictor_explains_what_is_not_a_model(run, tmp_path):
    with pytest.raises(TfbertError, match="no such folder"):
        load_predictor(str(tmp_path / "missing"))
    (tmp_path / "notes.txt").write_text("not a model", encoding="utf-8")
    with pytest.raises(TfbertError, match="is a file"):
        load_predictor(str(tmp_path / "notes.txt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TfbertError, match="not a model .*give a run folder"):
        load_predictor(str(tmp_path / "empty"))
    with pytest.raises(TfbertError, match="no finished run"):
        load_predictor(output_dir=str(tmp_path / "empty"))
    with pytest.raises(TfbertError, match="expected a URL like"):
        load_predictor(server="http://127.0.0.1:8501")


@pytest.mark.slow  # exports a SavedModel (and a compact model) first
def test_every_predictor_keeps_the_protocol_and_they_agree(run):
    keras = KerasPredictor(run / "model")
    predictors = [keras, SavedModelPredictor(run / "saved_model"), TFLitePredictor(run / "compact")]
    with serve_in_thread(run / "saved_model") as (url, _):
        predictors.append(ServerPredictor(url, batch_size=2))
        answers = [predictor.predict(TEXTS) for predictor in predictors]
    expected = answers[0]
    for predictor, probabilities in zip(predictors, answers):
        name = type(predictor).__name__
        assert isinstance(predictor, Predictor), name
        assert predictor.labels == list(LABELS.values()), name
        assert isinstance(probabilities, np.ndarray) and probabilities.dtype == np.float32, name
        assert probabilities.shape == (len(TEXTS), len(LABELS)), name
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5, err_msg=name)
        # The compact export's larger matrices (the embeddings) are int8: close to the others, not equal.
        np.testing.assert_allclose(probabilities, expected, atol=0.03 if predictor is predictors[2] else 1e-5,
                                   err_msg=name)


@pytest.mark.slow  # exports a SavedModel (and a compact model) first
def test_the_three_settings_files_share_one_schema(run):
    fields = set(ModelSettings().to_json())
    files = {"model": run / "model" / "tfbert.json",
             "saved_model": run / "saved_model" / "1" / "assets.extra" / "tfbert" / "metadata.json",
             "compact": run / "compact" / "tfbert.json"}
    written = {kind: json.loads(path.read_text(encoding="utf-8")) for kind, path in files.items()}
    for kind, data in written.items():
        assert fields <= set(data), kind
        settings = ModelSettings.from_json(data)
        assert (settings.labels, settings.max_length, settings.truncation) == (list(LABELS.values()), 16, "head")
        assert settings.uses_token_type_ids is True and settings.left_out_layers == [], kind
    assert set(written["model"]) == fields  # the model folder holds the settings and nothing else
    assert {"signatures", "in_graph_tokenization", "tokenization_note", "weights"} <= set(written["saved_model"])
    assert "format" in written["compact"]
