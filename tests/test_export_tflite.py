"""The compact TFLite export: int8 weights, predictions like the model's, and train.py/infer.py around it."""

import json

import datasets
import numpy as np
import pytest
from conftest import make_rows, write_jsonl, write_tiny_model
from test_cli import _assert_clean_failure, run_cli

from tfbert import modeling
from tfbert.data.pipeline import encode_batch
from tfbert.errors import TfbertError
from tfbert.evaluation import predict_probabilities
from tfbert.export_tflite import MODEL_FILE, export_tflite
from tfbert.model_settings import ModelSettings
from tfbert.predictors import SavedModelPredictor, TFLitePredictor

LABELS = ["neg", "neu", "pos"]
TEXTS = ["great phone really good", "awful broken item", "okay item", "good " * 30, "", "この商品は最高です",
         "bad bad terrible", "fine, it works", "not great not awful"]


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory):
    """A tiny BERT wide enough (64) that its matrices get int8 weights (TFLite skips tensors under 1,024
    values); its random classifier already gives the texts different answers."""
    import tensorflow as tf

    folder = write_tiny_model(tmp_path_factory.mktemp("wide_bert"), hidden_size=64)
    tf.keras.utils.set_random_seed(0)  # the head's initializer too
    return modeling.load_for_training(folder, LABELS), modeling.load_tokenizer(folder)


@pytest.mark.slow
def test_compact_export_has_int8_weights_and_predicts_like_the_model(wide_model, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    model, tokenizer = wide_model
    folder = export_tflite(model, tokenizer, ModelSettings(labels=LABELS, max_length=16), tmp_path / "c")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no staging folder left
    details = Interpreter(model_path=str(folder / MODEL_FILE)).get_tensor_details()
    assert sum(1 for d in details if d["dtype"] == np.int8 and list(d["shape"]) == [64, 64]) >= 8  # Q, K, V, out

    expected = predict_probabilities(model, datasets.Dataset.from_dict(
        encode_batch(tokenizer, TEXTS, None, 16, "head")), tokenizer, 4)
    assert expected.std(axis=0).max() > 0.05  # the texts really get different answers
    one_by_one = TFLitePredictor(folder, batch_size=1).predict(TEXTS)
    batched = TFLitePredictor(folder, batch_size=4).predict(TEXTS)  # length-sorted, padded batches
    assert one_by_one.dtype == np.float32 and one_by_one.shape == (len(TEXTS), 3)
    np.testing.assert_allclose(one_by_one.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(one_by_one, expected, atol=0.03)  # int8 weights: close, not equal
    assert (one_by_one.argmax(axis=1) == expected.argmax(axis=1)).mean() >= 0.8
    np.testing.assert_allclose(batched, one_by_one, atol=5e-3)  # padding is masked out
    one_interpreter = TFLitePredictor(folder, batch_size=4, interpreters=1)
    assert one_interpreter.interpreters == 1
    np.testing.assert_allclose(one_interpreter.predict(TEXTS), batched, atol=1e-6)  # batches run in parallel, same answers

    with pytest.raises(TfbertError, match="never overwritten"):
        export_tflite(model, tokenizer, ModelSettings(labels=LABELS, max_length=16), folder)
    from tfbert.predictors import load_predictor

    assert isinstance(load_predictor(str(folder)), TFLitePredictor)


@pytest.mark.slow
def test_train_with_export_tflite_records_the_f1_and_infer_uses_it(tiny_model_dir, tmp_path):
    rows = make_rows(120)
    write_jsonl(tmp_path / "reviews.jsonl", rows)
    completed = run_cli("train.py", "--train_file", "reviews.jsonl", "--model_name", str(tiny_model_dir),
                        "--epochs", "2", "--max_length", "32", "--precision", "float32", "--export_tflite",
                        "--compact_layers", "auto",  # the layer search (the default keeps every layer)
                        "--compact_max_f1_drop", "0.1",  # 12 validation examples resolve 0.1, not the default 0.005
                        "--export_weights", "variables", "--quiet", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    run = next((tmp_path / "output" / "reviews").glob("*/*"))
    assert SavedModelPredictor(run / "saved_model").metadata["weights"] == "variables"
    compact = json.loads((run / "metrics.json").read_text())["compact"]
    assert compact["path"] == f"compact/{MODEL_FILE}" and (run / compact["path"]).is_file()
    assert compact["mib"] == pytest.approx((run / compact["path"]).stat().st_size / 2**20, abs=0.01)
    # The recorded F1 is the compact model's own on the test split, recomputed here from the texts.
    from sklearn.metrics import f1_score

    test_rows = [rows[i] for i in json.loads((run / "splits.json").read_text())["rows"]["test"]]
    predicted = TFLitePredictor(run / "compact").predict([row["text"] for row in test_rows]).argmax(axis=1)
    f1 = f1_score([row["label"] for row in test_rows], [LABELS[i] for i in predicted], average="macro")
    assert compact["test_macro_f1"] == pytest.approx(f1, abs=1e-6)
    model_f1 = json.loads((run / "metrics.json").read_text())["test"]["macro_f1"]
    assert compact["test_macro_f1_change"] == pytest.approx(f1 - model_f1, abs=1e-4)
    assert "compact/" in (run / "report.md").read_text()
    # --compact_layers auto tried leaving out each of the 2 layers; the TFLite file computes the model it chose.
    search = compact["layer_search"]
    assert [t["left_out"] for t in search["tried"][:2]] == [[0], [1]]
    assert compact["encoder_layers"] + len(compact["left_out_layers"]) == 2
    assert search["validation_macro_f1"] >= search["validation_macro_f1_full"] - search["max_f1_drop"]
    assert json.loads((run / "compact" / "tfbert.json").read_text())["left_out_layers"] == compact["left_out_layers"]
    if compact["left_out_layers"]:
        assert f"{compact['encoder_layers']} of 2 encoder layers" in (run / "report.md").read_text()
    from tfbert import layer_drop

    model = modeling.load_classifier(run / "model")
    if compact["left_out_layers"]:
        model = layer_drop.without_layers(model, compact["left_out_layers"])
    encoded = encode_batch(modeling.load_tokenizer(run / "model"), [row["text"] for row in test_rows], None, 32, "head")
    keras_probabilities = predict_probabilities(model, datasets.Dataset.from_dict(dict(encoded)),
                                                modeling.load_tokenizer(run / "model"))
    np.testing.assert_allclose(TFLitePredictor(run / "compact").predict([row["text"] for row in test_rows]),
                               keras_probabilities, atol=0.03)

    texts = ["great phone really good", "awful broken item"]
    answered = run_cli("infer.py", *texts, "--json", "--model", str(run / "compact"), cwd=tmp_path)
    assert answered.returncode == 0, answered.stderr[-3000:]
    expected = TFLitePredictor(run / "compact").predict(texts)
    for line, row in zip(answered.stdout.splitlines(), expected):
        answer = json.loads(line)
        assert answer["confidence"] == pytest.approx(float(row.max()), abs=1e-5)
    not_compact = tmp_path / "empty"
    not_compact.mkdir()
    (not_compact / MODEL_FILE).write_bytes(b"")
    _assert_clean_failure(run_cli("infer.py", "text", "--model", str(not_compact), cwd=tmp_path), "compact export")
