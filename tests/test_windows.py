"""Long documents read in windows (--long_text window): the windows against the tokenizer's own overflow, pooling,
the in-graph windows against the host's, and a run whose labels only the windows can see, through train.py,
infer.py, the SavedModel and serve.py."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import CLASS_WORDS, FILLER, write_jsonl

from tfbert import windows
from tfbert.data.pipeline import encode_batch

ROOT = Path(__file__).resolve().parent.parent


def run_cli(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=900)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def long_rows(n: int, seed: int = 0, words: int = 16) -> list[dict]:
    """Texts of ``words`` filler words whose one class word comes after the 10th word: past a 10-token head."""
    rng = random.Random(seed)
    labels = sorted(CLASS_WORDS)
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        text = [rng.choice(FILLER) for _ in range(words)]
        text.insert(rng.randrange(10, words), rng.choice(CLASS_WORDS[label]))
        rows.append({"text": " ".join(text), "label": label})
    rng.shuffle(rows)
    return rows


# --- windows and pooling -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("words, max_length, stride", [(0, 16, 4), (10, 16, 4), (14, 16, 4), (15, 16, 4),
                                                       (40, 16, 4), (40, 16, 0), (40, 12, 9), (57, 32, 16)])
def test_windows_are_the_fast_tokenizers_overflow_with_stride(tokenizer, words, max_length, stride):
    text = " ".join(random.Random(words).choice(FILLER + ["goodness"]) for _ in range(words))
    overflow = tokenizer(text, truncation=True, max_length=max_length, stride=stride,
                         return_overflowing_tokens=True)["input_ids"]
    encoded = encode_batch(tokenizer, [text], None, max_length, "head", stride=stride)
    assert encoded[windows.WINDOW_COLUMN] == [overflow]
    assert encoded["input_ids"] == [overflow[0]] == [tokenizer(text, truncation=True, max_length=max_length)["input_ids"]]


@pytest.mark.parametrize("title_words, body_words, max_length, stride", [(3, 40, 16, 4), (9, 4, 16, 4),
                                                                         (2, 57, 32, 16), (6, 30, 16, 0)])
def test_pair_windows_keep_the_first_text_as_only_second_overflow_does(tokenizer, title_words, body_words,
                                                                       max_length, stride):
    rng = random.Random(body_words)
    title, body = (" ".join(rng.choice(FILLER) for _ in range(n)) for n in (title_words, body_words))
    overflow = tokenizer(title, body, truncation="only_second", max_length=max_length, stride=stride,
                         return_overflowing_tokens=True)
    encoded = encode_batch(tokenizer, [title], [body], max_length, "head", stride=stride)
    assert encoded[windows.WINDOW_COLUMN] == [overflow["input_ids"]]
    assert encoded[windows.WINDOW_TYPES] == [overflow["token_type_ids"]]


def test_a_long_first_text_is_cut_so_that_windows_move_on(tokenizer):
    title, body = " ".join(["good"] * 20), " ".join(["the"] * 30)
    encoded = encode_batch(tokenizer, [title], [body], 16, "head", stride=4)  # budget 13: title keeps (13-4)//2 = 4
    for window in encoded[windows.WINDOW_COLUMN][0]:
        assert window[:6] == tokenizer.convert_tokens_to_ids(["[CLS]"] + ["good"] * 4 + ["[SEP]"])
    assert len(encoded[windows.WINDOW_COLUMN][0]) == 1 + -(-(30 - 9) // 5)  # 9 body pieces a window, 5 new each


def test_window_rows_give_every_window_with_its_documents_index(tokenizer):
    texts = ["good", " ".join(["the"] * 30), "bad item"]
    encoded = encode_batch(tokenizer, texts, None, 16, "head", stride=4)
    rows, document = windows.window_rows(encoded)
    assert document.tolist() == [0, 1, 1, 1, 2] and windows.window_count(encoded) == 5
    assert rows["input_ids"][1:4] == encoded[windows.WINDOW_COLUMN][1]
    assert all(mask == [1] * len(ids) for mask, ids in zip(rows["attention_mask"], rows["input_ids"]))


def test_pooling_is_the_mean_of_logits_or_the_most_confident_window():
    from scipy.special import expit, softmax

    logits = np.array([[2.0, 0.0, -1.0], [0.5, 3.0, 0.0], [1.0, 1.0, 1.0], [-2.0, 0.0, 4.0]])
    document = np.array([0, 0, 1, 0])
    mean = windows.pooled_outputs("single_label", logits, document, 2, "mean")
    np.testing.assert_allclose(mean[0], softmax(logits[[0, 1, 3]].mean(axis=0)), rtol=1e-6)
    np.testing.assert_allclose(mean[1], [1 / 3] * 3, rtol=1e-6)
    log_probabilities = np.log(softmax(logits, axis=1))
    np.testing.assert_allclose(windows.pooled_outputs("single_label", logits, document, 2, "max")[0],
                               softmax(log_probabilities[[0, 1, 3]].max(axis=0)), rtol=1e-6)
    np.testing.assert_allclose(windows.pooled_outputs("multi_label", logits, document, 2, "max")[0],
                               expit(logits[[0, 1, 3]]).max(axis=0), rtol=1e-6)
    np.testing.assert_allclose(windows.pooled_outputs("regression", logits[:, :1], document, 2, "mean")[:, 0],
                               [(2.0 + 0.5 - 2.0) / 3, 1.0], rtol=1e-6)


@pytest.mark.parametrize("task, how", [("single_label", "mean"), ("single_label", "max"), ("multi_label", "mean"),
                                       ("regression", "max")])
def test_the_graphs_pooling_is_the_hosts(task, how):
    import tensorflow as tf

    logits = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32)
    document = np.array([2, 0, 0, 1, 2, 2, 0])
    pooled = windows.graph_pooled_logits(task, tf.constant(logits), tf.constant(document), 3, how)
    activated = {"single_label": tf.nn.softmax, "multi_label": tf.sigmoid, "regression": tf.identity}[task](pooled)
    np.testing.assert_allclose(activated.numpy(), windows.pooled_outputs(task, logits, document, 3, how), atol=1e-6)


@pytest.mark.parametrize("max_length, stride", [(16, 4), (12, 0), (32, 16)])
def test_in_graph_windows_are_the_hosts(tokenizer, tmp_path, max_length, stride):
    import tensorflow as tf
    import tensorflow_text  # noqa: F401

    from tfbert.graph_tokenizers import text_encoder

    texts = ["", "good", " ".join(["the"] * 14), " ".join(random.Random(1).choice(FILLER) for _ in range(57)),
             "hello world ! " * 9]
    ids, mask, types, document = text_encoder(tokenizer, max_length, "head", tmp_path).encode_windows(
        tf.constant(texts), stride)
    rows, expected_document = windows.window_rows(encode_batch(tokenizer, texts, None, max_length, "head",
                                                               stride=stride))
    assert document.numpy().tolist() == expected_document.tolist()
    lengths = mask.numpy().sum(axis=1)
    assert [row[:n].tolist() for row, n in zip(ids.numpy(), lengths)] == rows["input_ids"]
    assert not types.numpy().any()
    titles = ["good", "", " ".join(["bad"] * 30), "hello world", "a b c d e f g h"]
    ids, mask, types, document = text_encoder(tokenizer, max_length, "head", tmp_path).encode_windows(
        tf.constant(titles), stride, tf.constant(texts))
    rows, expected_document = windows.window_rows(encode_batch(tokenizer, titles, texts, max_length, "head",
                                                               stride=stride))
    assert document.numpy().tolist() == expected_document.tolist()
    lengths = mask.numpy().sum(axis=1)
    assert [row[:n].tolist() for row, n in zip(ids.numpy(), lengths)] == rows["input_ids"]
    assert [row[:n].tolist() for row, n in zip(types.numpy(), lengths)] == rows["token_type_ids"]


# --- settings ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, fragment", [
    (["--long_text", "window", "--truncation", "tail"], "--truncation tail is for --long_text truncate"),
    (["--long_text", "window", "--stride", "-1"], "--stride must not be negative"),
    (["--long_text", "window", "--backend", "keras"], "--long_text window works with --backend transformers only"),
])
def test_settings_windows_cannot_honour_are_refused(argv, fragment):
    from tfbert.config import parse_train_args
    from tfbert.errors import TfbertError

    with pytest.raises(TfbertError, match=fragment):
        parse_train_args(argv)


# --- runs --------------------------------------------------------------------------------------------------------

TINY = ["--epochs", "10", "--lr", "3e-3", "--batch_size", "16", "--max_length", "10", "--precision", "float32",
        "--patience", "0", "--quiet", "--baseline", "off"]


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory):
    """The same long texts trained with head truncation and with windows (stride 2)."""
    work = tmp_path_factory.mktemp("windows")
    write_jsonl(work / "long.jsonl", long_rows(300))
    found = {}
    for name, extra in (("head", []), ("window", ["--long_text", "window", "--stride", "2", "--export_tflite"])):
        completed = run_cli("train.py", "--train_file", "long.jsonl", "--model_name", str(tiny_model_dir), *TINY,
                            "--output_dir", f"out_{name}", *extra, cwd=work)
        assert completed.returncode == 0, completed.stderr[-3000:]
        found[name] = next((work / f"out_{name}").glob("long/*/*"))
    return {"work": work, **found}


@pytest.mark.slow
def test_windows_find_what_head_truncation_cannot_see(runs):
    head = json.loads((runs["head"] / "metrics.json").read_text())["test"]["macro_f1"]
    window = json.loads((runs["window"] / "metrics.json").read_text())["test"]["macro_f1"]
    assert window >= 0.8 and head <= 0.6, (head, window)
    settings = json.loads((runs["window"] / "model" / "tfbert.json").read_text())
    assert (settings["long_text"], settings["stride"], settings["window_pool"]) == ("window", 2, "mean")
    config = json.loads((runs["window"] / "config.json").read_text())
    assert config["settings"]["data"]["long_text"] == "window"


@pytest.mark.slow
def test_the_saved_model_answers_each_document_as_the_keras_model(runs, tokenizer, tmp_path):
    import tensorflow as tf

    from tfbert.export import export_saved_model
    from tfbert.modeling import load_classifier
    from tfbert.predictors import KerasPredictor, SavedModelPredictor

    run = runs["window"]
    texts = [row["text"] for row in long_rows(30, seed=7)] + ["good", ""]
    keras, saved = KerasPredictor(run / "model"), SavedModelPredictor(run / "saved_model")
    np.testing.assert_allclose(saved.predict(texts), keras.predict(texts), atol=1e-5)
    meta = saved.metadata
    assert meta["long_text"] == "window" and "predict_windows" in meta["signatures"]
    assert "predict_text_pair" not in meta["signatures"]  # trained on single texts
    # The windowed pair signature, as a model trained on pairs gets it.
    paired = tf.saved_model.load(str(export_saved_model(
        load_classifier(run / "model"), tokenizer, id2label=dict(enumerate(meta["labels"])), max_length=10,
        base_dir=tmp_path, stride=2, window_pool="mean", text_pairs=True)))
    pairs = paired.signatures["predict_text_pair"](text=tf.constant(texts[:4]), text_pair=tf.constant(texts[4:8]))
    np.testing.assert_allclose(pairs["probabilities"].numpy(), keras.predict(texts[:4], texts[4:8]), atol=1e-5)
    # predict_windows: the client's windows and each one's text index give the same answers
    rows, document = windows.window_rows(encode_batch(tokenizer, texts, None, 10, "head", stride=2))
    padded = tokenizer.pad(rows, return_tensors="np")
    out = saved.loaded.signatures["predict_windows"](
        **{k: tf.constant(v, tf.int64) for k, v in padded.items()}, window_document=tf.constant(document, tf.int64))
    np.testing.assert_allclose(out["probabilities"].numpy(), keras.predict(texts), atol=1e-5)
    assert out["label"].numpy().shape == (len(texts),)
    client_side = SavedModelPredictor(run / "saved_model")  # as for exports without in-graph tokenisation (MeCab)
    client_side.tokenizer = tokenizer
    np.testing.assert_allclose(client_side.predict(texts), keras.predict(texts), atol=1e-5)


@pytest.mark.slow
def test_the_compact_export_pools_each_documents_windows_as_the_saved_model(runs):
    from sklearn.metrics import f1_score

    from tfbert.predictors import SavedModelPredictor, TFLitePredictor

    run = runs["window"]
    compact, saved = TFLitePredictor(run / "compact"), SavedModelPredictor(run / "saved_model")
    assert (compact.stride, compact.window_pool) == (2, "mean") and compact.light_tokenizer is not None
    texts = [row["text"] for row in long_rows(40, seed=7)] + ["good", ""]
    answers = compact.predict(texts)
    assert answers.shape == (len(texts), len(compact.labels))
    np.testing.assert_allclose(answers, saved.predict(texts), atol=0.03)  # int8 weights: close, not equal
    # transformers' tokenizer makes the same windows as the tokenizers library alone
    full_tokenizer = TFLitePredictor(run / "compact", use_light_tokenizer=False)
    np.testing.assert_allclose(full_tokenizer.predict(texts), answers, atol=1e-6)
    # Its recorded test macro-F1 is over documents, recomputed here from the texts.
    rows = long_rows(300)
    test_rows = [rows[i] for i in json.loads((run / "splits.json").read_text())["rows"]["test"]]
    predicted = compact.predict([row["text"] for row in test_rows]).argmax(axis=1)
    f1 = f1_score([row["label"] for row in test_rows], [compact.labels[i] for i in predicted], average="macro")
    assert json.loads((run / "metrics.json").read_text())["compact"]["test_macro_f1"] == pytest.approx(f1, abs=1e-6)


@pytest.mark.slow
def test_max_pooling_is_the_same_in_the_graph_and_in_python(runs, tokenizer, tmp_path):
    import datasets

    from tfbert import modeling
    from tfbert.evaluation import predict_probabilities
    from tfbert.export import export_saved_model
    from tfbert.predictors import SavedModelPredictor

    model = modeling.load_classifier(runs["window"] / "model")
    version = export_saved_model(model, tokenizer, id2label=model.config.id2label, max_length=10, base_dir=tmp_path,
                                 stride=2, window_pool="max")
    texts = [row["text"] for row in long_rows(20, seed=11)]
    encoded = datasets.Dataset.from_dict(encode_batch(tokenizer, texts, None, 10, "head", count_tokens=False, stride=2))
    expected = predict_probabilities(model, encoded, tokenizer, window_pool="max")
    np.testing.assert_allclose(SavedModelPredictor(version).predict(texts), expected, atol=1e-5)
    assert not np.allclose(expected, predict_probabilities(model, encoded, tokenizer, window_pool="mean"), atol=1e-3)


@pytest.mark.slow
def test_infer_and_the_server_answer_one_line_per_document(runs):
    from test_serving import serve_py
    from tfbert.predictors import SavedModelPredictor, ServerPredictor

    from tfbert.model_choice import choose_export
    from tfbert.predictors import load_predictor

    run = runs["window"]
    texts = [row["text"] for row in long_rows(6, seed=3)]
    saved = SavedModelPredictor(run / "saved_model")
    chosen = load_predictor(str(choose_export(run).path))  # compact/ when it agrees with the model, as infer.py picks
    expected = [chosen.labels[i] for i in chosen.predict(texts).argmax(axis=1)]
    completed = run_cli("infer.py", "--model", str(run), "--json", *texts, cwd=runs["work"])
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert [json.loads(line)["label"] for line in completed.stdout.splitlines()] == expected
    with serve_py(run / "saved_model") as url:
        server = ServerPredictor(f"{url}/v1/models/tfbert")
        np.testing.assert_allclose(server.predict(texts), saved.predict(texts), atol=1e-5)


@pytest.mark.slow
def test_a_stride_of_a_whole_window_ends_with_one_line_and_writes_nothing(tiny_model_dir, tmp_path):
    write_jsonl(tmp_path / "long.jsonl", long_rows(30))
    completed = run_cli("train.py", "--train_file", "long.jsonl", "--model_name", str(tiny_model_dir), "--max_length",
                        "10", "--long_text", "window", "--stride", "8", "--output_dir", "out", cwd=tmp_path)
    assert completed.returncode == 2, completed.stderr[-2000:]
    lines = [line for line in completed.stderr.splitlines() if line.startswith("error: ")]
    assert lines == ["error: --stride 8: windows of --max_length hold 8 tokens besides the special ones; give a "
                     "stride from 0 to 7 (tokens a window shares with the one before)"], completed.stderr[-2000:]
    assert "Traceback" not in completed.stderr and not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("task, labels, how", [("multi_label", ["a", "b", "c"], "max"), ("regression", ["score"], "mean")])
def test_other_tasks_pool_windows_alike_in_the_saved_model_and_in_python(tiny_model_dir, tokenizer, tmp_path, task,
                                                                        labels, how):
    import datasets

    from tfbert import modeling
    from tfbert.evaluation import predict_probabilities
    from tfbert.export import export_saved_model
    from tfbert.predictors import SavedModelPredictor

    model = modeling.load_for_training(tiny_model_dir, labels)  # a random head: the same numbers either way
    version = export_saved_model(model, tokenizer, id2label=dict(enumerate(labels)), max_length=10, base_dir=tmp_path,
                                 task=task, thresholds=[0.5] * len(labels) if task == "multi_label" else None,
                                 stride=3, window_pool=how)
    texts = [row["text"] for row in long_rows(12, seed=5)] + ["good"]
    encoded = datasets.Dataset.from_dict(encode_batch(tokenizer, texts, None, 10, "head", count_tokens=False, stride=3))
    expected = predict_probabilities(model, encoded, tokenizer, task=task, window_pool=how)
    np.testing.assert_allclose(SavedModelPredictor(version).predict(texts), expected, atol=1e-5)
    assert expected.shape == (len(texts), len(labels))
