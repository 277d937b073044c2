"""The Keras 3 classifier's exports: SavedModel (signatures, parity, one copy of the weights, TF Serving layout),
predictors on a Keras 3 model folder, and the compact TFLite export."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import VOCAB
from test_keras_backend import tiny_transformers_classifier, write_hub_checkpoint

import tfbert  # noqa: F401  (process setup before TensorFlow loads)

LABELS = {0: "neg", 1: "neu", 2: "pos"}
TEXTS = ["the product is great", "awful , broken and bad", "okay i guess", "hello world 商品 最高"]


def keras_checkpoint(family: str, folder: Path, hidden_size: int = 16) -> Path:
    """A tiny random ``family`` checkpoint (vocabulary of the tests' WordPiece tokenizer) with that tokenizer."""
    from transformers import BertTokenizerFast

    import test_keras_backend

    sizes = dict(test_keras_backend.SIZES, vocab_size=len(VOCAB), max_position_embeddings=64, hidden_size=hidden_size,
                 intermediate_size=2 * hidden_size)
    original, test_keras_backend.SIZES = test_keras_backend.SIZES, sizes
    try:
        model = tiny_transformers_classifier(family)
    finally:
        test_keras_backend.SIZES = original
    write_hub_checkpoint(model, folder)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def keras_models(tmp_path_factory) -> dict:
    """family -> (Keras 3 classifier, its tokenizer, checkpoint folder)."""
    from transformers import AutoTokenizer

    from tfbert.keras_backend import build_classifier

    root = tmp_path_factory.mktemp("keras_checkpoints")
    result = {}
    for family in ("bert", "roberta"):
        folder = keras_checkpoint(family, root / family)
        result[family] = (build_classifier(folder, list(LABELS.values())), AutoTokenizer.from_pretrained(folder), folder)
    return result


def keras_probabilities(model, tokenizer, texts, max_length=16, pairs=None) -> np.ndarray:
    import tensorflow as tf

    from tfbert.export_keras import model_input_names

    encoded = tokenizer(texts, pairs, padding=True, truncation=True, max_length=max_length, return_tensors="np")
    inputs = {name: encoded[name].astype(np.int32) for name in model_input_names(model)}
    return tf.nn.softmax(np.asarray(model(inputs, training=False))).numpy(), encoded


def variable_bytes(model) -> int:
    return sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize for w in model.weights)


def graph_constant_bytes(version: Path) -> int:
    """Bytes of the float constants in saved_model.pb's graph and functions (the frozen weights)."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel.FromString((version / "saved_model.pb").read_bytes())
    graph = saved.meta_graphs[0].graph_def
    nodes = list(graph.node) + [node for function in graph.library.function for node in function.node_def]
    return sum(len(node.attr["value"].tensor.tensor_content) + 4 * len(node.attr["value"].tensor.float_val)
               for node in nodes if node.op == "Const" and node.attr["dtype"].type == 1)  # DT_FLOAT


@pytest.mark.slow
@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_saved_model_matches_the_keras_model(keras_models, family, tmp_path):
    import tensorflow as tf
    import tensorflow_text  # noqa: F401

    from tfbert.export_keras import export_saved_model_keras
    from tfbert.runs import folder_bytes

    model, tokenizer, _ = keras_models[family]
    version = export_saved_model_keras(model, tokenizer, id2label=LABELS, max_length=16, base_dir=tmp_path)
    assert version == tmp_path / "1"
    loaded = tf.saved_model.load(str(version))
    assert sorted(loaded.signatures) == ["predict_ids", "predict_text_pair", "serving_default"]
    expected, encoded = keras_probabilities(model, tokenizer, TEXTS)
    by_text = loaded.signatures["serving_default"](text=tf.constant(TEXTS))
    np.testing.assert_allclose(by_text["probabilities"].numpy(), expected, atol=2e-6)
    assert [label.decode() for label in by_text["label"].numpy()] == [LABELS[i] for i in expected.argmax(1)]
    feeds = {key: tf.constant(encoded[key], tf.int64) for key in ("input_ids", "attention_mask", "token_type_ids")}
    by_ids = loaded.signatures["predict_ids"](**feeds)
    np.testing.assert_allclose(by_ids["probabilities"].numpy(), expected, atol=2e-6)
    pairs = ["good", "bad bad"] * 2
    expected_pairs, _ = keras_probabilities(model, tokenizer, TEXTS, pairs=pairs)
    by_pair = loaded.signatures["predict_text_pair"](text=tf.constant(TEXTS), text_pair=tf.constant(pairs))
    np.testing.assert_allclose(by_pair["probabilities"].numpy(), expected_pairs, atol=2e-6)
    # One copy of the weights, in the graph (the rest of the folder: signatures, vocabulary, tokenizer files).
    weights = variable_bytes(model)
    assert weights <= graph_constant_bytes(version) < 1.1 * weights
    assert folder_bytes(version / "variables") < 0.1 * weights  # no variable copy beside them
    metadata = json.loads((version / "assets.extra" / "tfbert" / "metadata.json").read_text())
    assert metadata["labels"] == list(LABELS.values()) and metadata["weights"] == "graph constants"
    assert (version / "assets.extra" / "tf_serving_warmup_requests").is_file()
    from tfbert.predictors import SavedModelPredictor, load_predictor

    assert isinstance(load_predictor(str(tmp_path)), SavedModelPredictor)  # infer.py / evaluate.py on the export
    np.testing.assert_allclose(load_predictor(str(tmp_path)).predict(TEXTS), expected, atol=2e-6)


@pytest.mark.slow
def test_versions_variables_and_saved_model_cli(keras_models, tmp_path):
    import tensorflow as tf

    from tfbert.export_keras import export_saved_model_keras

    model, tokenizer, _ = keras_models["bert"]
    export_saved_model_keras(model, tokenizer, id2label=LABELS, max_length=16, base_dir=tmp_path)
    second = export_saved_model_keras(model, tokenizer, id2label=LABELS, max_length=16, base_dir=tmp_path,
                                      weights_in_graph=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2"]  # a new version, never an overwrite
    loaded = tf.saved_model.load(str(second))
    expected, _ = keras_probabilities(model, tokenizer, TEXTS)
    np.testing.assert_allclose(loaded.signatures["serving_default"](text=tf.constant(TEXTS))["probabilities"],
                               expected, atol=2e-6)
    stored = tf.train.list_variables(str(second / "variables" / "variables"))
    float_bytes = sum(4 * int(np.prod(shape)) for name, shape in stored if "VARIABLE_VALUE" in name)
    assert variable_bytes(model) <= float_bytes < 1.01 * variable_bytes(model)  # each variable once
    shown = subprocess.run([sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "show", "--dir",
                            str(second), "--all"], capture_output=True, text=True, check=True).stdout
    for name in ("serving_default", "predict_text_pair", "predict_ids", "probabilities", "label_names"):
        assert name in shown


def test_max_length_beyond_the_positions_is_refused(keras_models, tmp_path):
    from tfbert.errors import TfbertError
    from tfbert.export_keras import export_saved_model_keras

    model, tokenizer, _ = keras_models["bert"]
    with pytest.raises(TfbertError, match="--max_length 65: the model has only 64 positions"):
        export_saved_model_keras(model, tokenizer, id2label=LABELS, max_length=65, base_dir=tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert", "albert"])
def test_serving_rewrites_compute_the_same_logits(family, tmp_path):
    import tensorflow as tf
    from test_keras_backend import LABELS as NAMES
    from test_keras_backend import sample_batch

    from tfbert.keras_backend import build_classifier
    from tfbert.keras_serving import serving_rewrites

    model = build_classifier(write_hub_checkpoint(tiny_transformers_classifier(family), tmp_path), NAMES)
    batch = {k: v.astype(np.int32) for k, v in sample_batch(family in ("bert", "albert")).items()}
    expected = np.asarray(model(batch, training=False))
    def batch_matmuls(graph) -> int:
        return sum(op.type == "BatchMatMulV2" for op in graph.get_operations())

    forward = tf.function(lambda inputs: model(inputs, training=False))
    # Keras runs EinsumDense as BatchMatMulV2 between reshapes (BERT: 4 projections + 2 attention products a layer).
    before = batch_matmuls(forward.get_concrete_function(batch).graph)
    forward = tf.function(lambda inputs: model(inputs, training=False))
    with serving_rewrites(model):
        graph = forward.get_concrete_function(batch).graph
        got = forward(batch).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    assert before > batch_matmuls(graph) == 4  # attention's own products; every projection a 2-D MatMul
    np.testing.assert_allclose(np.asarray(model(batch, training=False)), expected, atol=0)  # restored after


def test_the_last_encoder_layer_computes_the_first_token_only(keras_models):
    from keras_hub.layers import TransformerEncoder

    from tfbert.keras_serving import encoder_layers, serving_rewrites

    model = keras_models["bert"][0]
    backbone = model.get_layer(next(layer.name for layer in model.layers if hasattr(layer, "transformer_layers")))
    batch = {"token_ids": np.full((2, 9), 7, np.int32), "padding_mask": np.ones((2, 9), np.int32),
             "segment_ids": np.zeros((2, 9), np.int32)}
    full = backbone(batch)
    with serving_rewrites(model):
        first = backbone(batch)
    assert tuple(full["sequence_output"].shape) == (2, 9, 16) and tuple(first["sequence_output"].shape) == (2, 1, 16)
    np.testing.assert_allclose(first["pooled_output"], full["pooled_output"], atol=1e-6)
    assert encoder_layers(model) == backbone.transformer_layers
    assert all(type(layer) is TransformerEncoder for layer in backbone.transformer_layers)


def keras_model_folder(model, tokenizer, folder: Path) -> Path:
    """A Keras 3 run's model/ folder: keras_backend.save's files, the tokenizer and tfbert.json."""
    from tfbert import keras_backend
    from tfbert.model_settings import ModelSettings

    keras_backend.save(model, folder)
    tokenizer.save_pretrained(folder)
    ModelSettings(labels=list(LABELS.values()), max_length=16, truncation="head",
                  uses_token_type_ids="token_type_ids" in tokenizer.model_input_names).write(folder)
    return folder


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_predictors_read_a_keras3_model_folder(keras_models, family, tmp_path):
    from tfbert.export_keras import is_keras3_folder
    from tfbert.predictors import KerasPredictor, Predictor, load_predictor

    model, tokenizer, _ = keras_models[family]
    keras_model_folder(model, tokenizer, tmp_path / "run" / "model")
    assert is_keras3_folder(tmp_path / "run" / "model") and not is_keras3_folder(tmp_path / "run")
    expected, _ = keras_probabilities(model, tokenizer, TEXTS)
    for path in (tmp_path / "run", tmp_path / "run" / "model"):  # a run folder and its model/
        predictor = load_predictor(str(path))
        assert isinstance(predictor, KerasPredictor) and isinstance(predictor, Predictor)
        assert predictor.labels == list(LABELS.values())
        np.testing.assert_allclose(predictor.predict(TEXTS), expected, atol=1e-6)  # ragged lengths, batched
    one_by_one = KerasPredictor(tmp_path / "run" / "model", batch_size=1).predict(TEXTS)
    np.testing.assert_allclose(one_by_one, expected, atol=1e-6)
    assert KerasPredictor(tmp_path / "run" / "model").predict([]).shape == (0, 3)


def test_explain_says_it_needs_the_transformers_model(keras_models, tmp_path):
    from tfbert.attributions import explain_predictor
    from tfbert.errors import TfbertError
    from tfbert.predictors import KerasPredictor

    model, tokenizer, _ = keras_models["bert"]
    predictor = KerasPredictor(keras_model_folder(model, tokenizer, tmp_path / "model"))
    with pytest.raises(TfbertError, match="--explain .* --backend keras"):
        explain_predictor(predictor, TEXTS[:1])


@pytest.mark.parametrize("family", ["bert", "albert"])
def test_layers_left_out_match_transformers_without_them(family, tmp_path):
    from test_keras_backend import LABELS as NAMES
    from test_keras_backend import sample_batch

    from tfbert.keras_backend import build_classifier
    from tfbert.keras_serving import encoder_layers, serving_rewrites
    from tfbert.layer_drop import without_layers

    reference = tiny_transformers_classifier(family)
    model = build_classifier(write_hub_checkpoint(reference, tmp_path), NAMES)
    batch = {k: v.astype(np.int32) for k, v in sample_batch(family == "bert").items()}
    if family == "albert":  # its layers share their weights: none can be left out
        assert encoder_layers(model) == []
        with pytest.raises(ValueError, match="left_out"):
            with serving_rewrites(model, left_out=[0]):
                pass
        return
    full = np.asarray(model(batch, training=False))
    for left_out in ([0], [1]):
        expected = without_layers(reference, left_out)(batch, training=False).logits.numpy()
        with serving_rewrites(model, left_out=left_out):
            got = np.asarray(model(batch, training=False))
        np.testing.assert_allclose(got, expected, atol=1e-5)
        assert not np.allclose(got, full, atol=1e-3)
    with pytest.raises(ValueError, match="keeping one"):
        with serving_rewrites(model, left_out=[0, 1]):
            pass
    np.testing.assert_allclose(np.asarray(model(batch, training=False)), full, atol=0)  # restored


@pytest.mark.slow
@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_tflite_from_the_keras3_model(family, tmp_path):
    from ai_edge_litert.interpreter import Interpreter
    from transformers import AutoTokenizer

    from tfbert.export_keras import export_tflite_keras
    from tfbert.keras_backend import build_classifier
    from tfbert.model_settings import ModelSettings
    from tfbert.predictors import TFLitePredictor

    # 64 wide: TFLite leaves tensors under 1,024 values in float32.
    checkpoint = keras_checkpoint(family, tmp_path / "checkpoint", hidden_size=64)
    model, tokenizer = build_classifier(checkpoint, list(LABELS.values())), AutoTokenizer.from_pretrained(checkpoint)
    settings = ModelSettings(labels=list(LABELS.values()), max_length=16)
    folder = export_tflite_keras(model, tokenizer, settings, tmp_path / "compact", left_out_layers=[0])
    with pytest.raises(Exception, match="never overwritten"):
        export_tflite_keras(model, tokenizer, settings, folder)
    assert ModelSettings.read(folder).left_out_layers == [0]
    interpreter = Interpreter(model_path=str(folder / "model_int8.tflite"))
    kernels = [d for d in interpreter.get_tensor_details() if d["dtype"] == np.int8 and len(d["shape"]) == 2]
    assert len(kernels) >= 6  # the kept layer's q, k, v, output and feed-forward kernels (and the head's), int8
    from tfbert.keras_serving import serving_rewrites

    with serving_rewrites(model, left_out=[0]):
        expected, _ = keras_probabilities(model, tokenizer, TEXTS)
    got = TFLitePredictor(folder).predict(TEXTS)
    np.testing.assert_allclose(got, expected, atol=0.02)  # int8 weights
    full = export_tflite_keras(model, tokenizer, settings, tmp_path / "full")
    assert (full / "model_int8.tflite").stat().st_size > (folder / "model_int8.tflite").stat().st_size


@pytest.mark.slow
def test_export_compact_takes_a_keras3_run(keras_models, tmp_path):
    from types import SimpleNamespace

    import datasets
    from conftest import make_rows

    from tfbert.keras_serving import serving_rewrites
    from tfbert.layer_drop import export_compact
    from tfbert.model_settings import ModelSettings
    from tfbert.predictors import TFLitePredictor

    model, tokenizer, _ = keras_models["bert"]
    names = list(LABELS.values())
    run = SimpleNamespace(path=tmp_path, model_dir=tmp_path / "model", compact_dir=tmp_path / "compact",
                          saved_model_base=tmp_path / "saved_model")
    keras_model_folder(model, tokenizer, run.model_dir)
    run.saved_model_base.mkdir()
    (run.saved_model_base / "saved_model.pb").write_bytes(b"0" * 100_000)
    splits = {}
    for split, seed in (("validation", 1), ("test", 2)):
        rows = make_rows(30, seed=seed)
        encoded = dict(tokenizer([r["text"] for r in rows], truncation=True, max_length=16))
        encoded["label"] = [names.index(r["label"]) for r in rows]
        splits[split] = datasets.Dataset.from_dict(encoded)
    prepared = SimpleNamespace(encoded=splits, tokenizer=tokenizer, label_names=names,
                               labels=lambda split: np.asarray(splits[split]["label"]))
    # The run's own test predictions (evaluation writes them before the export): the agreement is measured on them.
    test_texts = [r["text"] for r in make_rows(30, seed=2)]
    full_model, _ = keras_probabilities(model, tokenizer, test_texts)
    full_labels = [names[i] for i in full_model.argmax(axis=1)]
    (run.path / "predictions_test.jsonl").write_text("".join(json.dumps({"predicted": label}) + "\n"
                                                             for label in full_labels), encoding="utf-8")
    config = SimpleNamespace(training=SimpleNamespace(compact_layers="auto", compact_max_f1_drop=1.0, batch_size=8),
                             data=SimpleNamespace(max_length=16, truncation="head"),
                             model=SimpleNamespace(word_tokenizer=None))
    entry = export_compact(run, prepared, config, model_test={"macro_f1": 0.5})
    # A budget of 1.0 lets the search leave out one of the two layers (one always stays).
    assert len(entry["left_out_layers"]) == 1 and entry["encoder_layers"] == 1
    assert [t["left_out"] for t in entry["layer_search"]["tried"]] == [[0], [1]]
    assert ModelSettings.read(run.compact_dir).left_out_layers == entry["left_out_layers"]
    with serving_rewrites(model, left_out=entry["left_out_layers"]):
        expected, _ = keras_probabilities(model, tokenizer, TEXTS)
    np.testing.assert_allclose(TFLitePredictor(run.compact_dir).predict(TEXTS), expected, atol=0.01)  # int8 embeddings
    assert 0 <= entry["test_macro_f1"] <= 1 and entry["test_macro_f1_change"] == round(entry["test_macro_f1"] - 0.5, 4)
    compact_labels = [names[i] for i in TFLitePredictor(run.compact_dir).predict(test_texts).argmax(axis=1)]
    assert entry["test_label_agreement"] == pytest.approx(np.mean(np.array(compact_labels) == full_labels), abs=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("weights_in_graph", [True, False])
def test_bfloat16_export_matches_the_bfloat16_model(keras_models, tmp_path, weights_in_graph):
    import keras
    import tensorflow as tf
    import tensorflow_text  # noqa: F401

    from tfbert import keras_backend
    from tfbert.export_keras import export_saved_model_keras

    model, tokenizer, _ = keras_models["bert"]
    keras_model_folder(model, tokenizer, tmp_path / "model")
    keras.mixed_precision.set_global_policy("mixed_bfloat16")  # as a run exports after bfloat16 training
    try:
        serving = keras_backend.load(tmp_path / "model")
        expected, _ = keras_probabilities(serving, tokenizer, TEXTS)
        version = export_saved_model_keras(serving, tokenizer, id2label=LABELS, max_length=16,
                                           base_dir=tmp_path / "saved_model", weights_in_graph=weights_in_graph)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    got = tf.saved_model.load(str(version)).signatures["serving_default"](text=tf.constant(TEXTS))["probabilities"]
    assert got.dtype == tf.float32
    np.testing.assert_allclose(got.numpy(), expected, atol=5e-3)  # bfloat16: other op orders round differently
    metadata = json.loads((version / "assets.extra" / "tfbert" / "metadata.json").read_text())
    assert metadata["compute_policy"] == "mixed_bfloat16"
    assert metadata["weights"] == ("graph constants" if weights_in_graph else "variables")
    if not weights_in_graph:  # kept as the graph computes with them
        stored = tf.train.load_checkpoint(str(version / "variables" / "variables")).get_variable_to_dtype_map()
        assert tf.bfloat16 in set(stored.values())


def test_infer_py_on_a_keras3_model_folder(keras_models, tmp_path, monkeypatch, capsys):
    import infer

    model, tokenizer, _ = keras_models["roberta"]
    folder = keras_model_folder(model, tokenizer, tmp_path / "model")
    expected, _ = keras_probabilities(model, tokenizer, TEXTS[:2])
    monkeypatch.setattr(sys, "argv", ["infer.py", "--model", str(folder), "--json", *TEXTS[:2]])
    assert infer.run_main(infer.main) == 0
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [a["label"] for a in answers] == [LABELS[i] for i in expected.argmax(1)]
    assert [a["confidence"] for a in answers] == pytest.approx(expected.max(1), abs=1e-5)
    monkeypatch.setattr(sys, "argv", ["infer.py", "--model", str(folder), "--explain", TEXTS[0]])
    assert infer.run_main(infer.main) == 2  # one line naming the limit, no traceback
    assert "--backend keras" in capsys.readouterr().err
