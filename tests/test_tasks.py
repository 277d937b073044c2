"""Multi-label and regression tasks: targets, splits, metrics against scikit-learn/SciPy, export outputs, and runs
through train.py and infer.py."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import FILLER, write_jsonl
from tfbert import tasks
from tfbert.config import DataConfig, parse_train_args
from tfbert.data import targets
from tfbert.data.corpus import load_corpus
from tfbert.errors import TfbertError
from tfbert.task_metrics import evaluate_multi_label, evaluate_regression

ROOT = Path(__file__).resolve().parent.parent
TOPICS = {"sport": ["good", "great"], "tech": ["phone", "item"], "food": ["love", "best"]}


def topic_rows(n: int, seed: int = 0) -> list[dict]:
    """Texts naming one to three topics by their words; the score is the number of topics plus noise."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        labels = [topic for topic in TOPICS if rng.random() < 0.45] or [rng.choice(sorted(TOPICS))]
        words = rng.sample(FILLER, 3) + [rng.choice(TOPICS[topic]) for topic in labels]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": labels, "score": len(labels) + 0.1 * rng.random()})
    return rows


# --- targets -----------------------------------------------------------------------------------------------------

def test_label_sets_read_lists_delimited_strings_and_json_in_a_cell():
    values = pd.Series([["a", "b"], "b, c", '["c"]', "a"])
    assert targets.label_sets(values, None, "x", range(4), False) == [["a", "b"], ["b, c"], ["c"], ["a"]]
    assert targets.label_sets(values, ",", "x", range(4), False) == [["a", "b"], ["b", "c"], ['["c"]'], ["a"]]


def test_an_empty_label_set_is_refused_naming_the_rows_unless_allowed():
    values = pd.Series([["a"], [], ""])
    with pytest.raises(TfbertError, match=r"^--train_file d.jsonl: 2 row\(s\) with an empty label set \(data rows "
                                          r"2, 3\).*--allow_empty_labels"):
        targets.label_sets(values, ",", "--train_file d.jsonl", [0, 1, 2], allow_empty=False)
    assert targets.label_sets(values, ",", "x", [0, 1, 2], allow_empty=True) == [["a"], [], []]


def test_label_columns_become_label_sets_and_other_values_are_refused():
    frame = pd.DataFrame({"text": ["x", "y"], "a": ["1", "0"], "b": [1, 1]})
    assert targets.gather_label_columns(frame, ["a", "b"], "label", "f")["label"].tolist() == [["a", "b"], ["b"]]
    frame.loc[1, "a"] = "maybe"
    with pytest.raises(TfbertError, match="data row 2, column 'a' holds 'maybe'"):
        targets.gather_label_columns(frame, ["a", "b"], "label", "f")


def test_a_regression_label_that_is_not_a_number_names_file_and_row():
    with pytest.raises(TfbertError, match=r"^--train_file s.csv: data row 3 has regression label 'n/a'"):
        targets.numeric_targets(pd.Series(["1.5", "2", "n/a"]), "--train_file s.csv", [0, 1, 2])


def test_iterative_stratification_keeps_every_labels_share_in_each_fold():
    rng = np.random.default_rng(3)
    y = (rng.random((2000, 6)) < [0.5, 0.3, 0.1, 0.04, 0.02, 0.4]).astype(float)
    folds = targets.iterative_stratification(y, [0.8, 0.1, 0.1], seed=0)
    assert sorted(np.concatenate(folds).tolist()) == list(range(2000))  # a partition
    assert [len(fold) for fold in folds] == pytest.approx([1600, 200, 200], abs=3)
    for fold in folds:  # each label's count in a fold is its share of the label's examples, give or take one
        assert np.abs(y[fold].sum(axis=0) - y.sum(axis=0) * len(fold) / 2000).max() <= 1.5
    random_fold = rng.permutation(2000)[:200]  # what it improves on: a random 10 % misses shares by several
    assert np.abs(y[random_fold].sum(axis=0) - y.sum(axis=0) / 10).max() > 1.5


def test_take_returns_exactly_the_count_asked_for():
    table = pd.DataFrame({"label": list((np.random.default_rng(0).random((97, 4)) < 0.3).astype(np.float32)),
                          "row_id": range(97)})
    rest, taken = targets.take(table, 13, seed=1, task="multi_label")
    assert len(taken) == 13 and len(rest) == 84 and not set(rest.row_id) & set(taken.row_id)


# --- corpus ------------------------------------------------------------------------------------------------------

def test_auto_reads_lists_as_multi_label_and_splits_keep_every_row(tmp_path):
    path = write_jsonl(tmp_path / "topics.jsonl", topic_rows(120))
    corpus = load_corpus(DataConfig(train_file=str(path)), seed=0)
    assert corpus.task == "multi_label" and corpus.label_names == ["food", "sport", "tech"]
    assert sum(corpus.sizes().values()) == 120
    row = corpus.splits["train"][0]
    assert row["label"] == [float(name in topic_rows(120)[row["row_id"]]["label"]) for name in corpus.label_names]


def test_separator_and_label_columns_read_the_same_sets(tmp_path):
    rows = topic_rows(60)
    pd.DataFrame({"text": [r["text"] for r in rows], "label": ["|".join(r["label"]) for r in rows]}).to_csv(
        tmp_path / "sep.csv", index=False)
    pd.DataFrame({"text": [r["text"] for r in rows], **{t: [int(t in r["label"]) for r in rows] for t in TOPICS}}
                 ).to_csv(tmp_path / "cols.csv", index=False)
    by_separator = load_corpus(DataConfig(train_file=str(tmp_path / "sep.csv"), label_separator="|"), seed=0)
    by_columns = load_corpus(DataConfig(train_file=str(tmp_path / "cols.csv"), label_columns="food,sport,tech"),
                             seed=0)
    assert by_separator.splits["test"]["label"] == by_columns.splits["test"]["label"]


def test_regression_reads_scores(tmp_path):
    path = write_jsonl(tmp_path / "topics.jsonl", topic_rows(50))
    corpus = load_corpus(DataConfig(train_file=str(path), task="regression", label_column="score"), seed=0)
    assert corpus.task == "regression" and corpus.label_names == ["score"]
    assert all(1 <= score <= 3.1 for score in corpus.splits["train"]["label"])


@pytest.mark.parametrize("argv, fragment", [
    (["--task", "regression", "--class_weight", "balanced"], "--class_weight is for single-label tasks"),
    (["--threshold", "1.5"], "--threshold 1.5: give auto or a number between 0 and 1"),
    (["--task", "regression", "--label_separator", ","], "--label_separator/--label_columns are for multi-label"),
])
def test_settings_a_task_cannot_honour_are_refused(argv, fragment):
    with pytest.raises(TfbertError, match=fragment):
        parse_train_args(argv)


# --- metrics against scikit-learn and SciPy ------------------------------------------------------------------------

def test_multi_label_metrics_equal_sklearns():
    from sklearn import metrics as sk

    rng = np.random.default_rng(0)
    gold = (rng.random((300, 4)) < 0.35).astype(int)
    probabilities = np.clip(gold * 0.4 + rng.random((300, 4)) * 0.6, 0, 1).astype(np.float32)
    thresholds = [0.3, 0.5, 0.6, 0.45]
    predicted = (probabilities >= np.array(thresholds, np.float32)).astype(int)
    result = evaluate_multi_label(probabilities, gold, list("abcd"), thresholds)
    for average in ("micro", "macro", "weighted", "samples"):
        assert result.metrics[f"{average}_f1"] == pytest.approx(sk.f1_score(gold, predicted, average=average))
    assert result.metrics["subset_accuracy"] == pytest.approx(sk.accuracy_score(gold, predicted))
    assert result.metrics["hamming_loss"] == pytest.approx(sk.hamming_loss(gold, predicted))
    assert result.metrics["per_label"]["c"]["recall"] == pytest.approx(sk.recall_score(gold[:, 2], predicted[:, 2]))
    assert result.metrics["per_label"]["b"]["support"] == int(gold[:, 1].sum())
    tn, fp, fn, tp = sk.confusion_matrix(gold[:, 3], predicted[:, 3]).ravel()
    assert result.confusion[3] == [[tn, fp], [fn, tp]]


def test_regression_metrics_equal_scipys_and_sklearns():
    from scipy import stats
    from sklearn import metrics as sk

    rng = np.random.default_rng(1)
    gold = rng.normal(3, 1, 200)
    scores = gold + rng.normal(0, 0.5, 200)
    result = evaluate_regression(scores, gold).metrics
    assert result["mse"] == pytest.approx(sk.mean_squared_error(gold, scores))
    assert result["mae"] == pytest.approx(sk.mean_absolute_error(gold, scores))
    assert result["pearson"] == pytest.approx(stats.pearsonr(gold, scores)[0])
    assert result["spearman"] == pytest.approx(stats.spearmanr(gold, scores)[0])
    assert evaluate_regression(np.full(5, 2.0), np.arange(5.0)).metrics["pearson"] == 0.0  # not NaN


def test_tuned_thresholds_give_each_label_its_best_f1_on_the_grid():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(2)
    gold = (rng.random((400, 3)) < [0.5, 0.2, 0.05]).astype(int)
    probabilities = np.clip(gold * 0.3 + rng.random((400, 3)) * 0.7, 0, 1)
    chosen = tasks.tune_thresholds(probabilities, gold)
    for j, threshold in enumerate(chosen):
        best = max(f1_score(gold[:, j], probabilities[:, j] >= t) for t in tasks.THRESHOLD_GRID)
        assert f1_score(gold[:, j], probabilities[:, j] >= threshold) == pytest.approx(best)
    assert tasks.tune_thresholds(probabilities, gold, "0.3") == [0.3, 0.3, 0.3]


def test_export_outputs_use_the_thresholds_as_the_python_decision_does():
    import tensorflow as tf

    from tfbert.task_export import task_outputs

    logits = np.random.default_rng(4).normal(0, 2, (50, 3)).astype(np.float32)
    thresholds = [0.2, 0.5, 0.8]
    out = task_outputs("multi_label", tf.constant(logits), tf.constant(["a", "b", "c"]), tf.constant(thresholds))
    probabilities = tasks.activate("multi_label", logits)
    np.testing.assert_allclose(out["probabilities"].numpy(), probabilities, atol=1e-6)
    mask = tasks.decide(probabilities, thresholds)
    assert (out["label_mask"].numpy() == mask).all()
    assert [s.decode() for s in out["label"].numpy()] == [",".join(n for n, on in zip("abc", row) if on) for row in mask]
    assert task_outputs("regression", tf.constant(logits[:, :1]), None, None)["score"].numpy().tolist() == \
        logits[:, 0].tolist()


# --- runs through train.py and infer.py ------------------------------------------------------------------------------

def run_cli(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=900)


TINY = ["--epochs", "3", "--lr", "3e-3", "--batch_size", "16", "--max_length", "32", "--precision", "float32",
        "--patience", "0", "--quiet"]


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("tasks")
    write_jsonl(work / "topics.jsonl", topic_rows(200))
    found = {}
    for task, extra in (("multi_label", []), ("regression", ["--task", "regression", "--label_column", "score"])):
        completed = run_cli("train.py", "--train_file", "topics.jsonl", "--model_name", str(tiny_model_dir), *TINY,
                            "--output_dir", f"out_{task}", "--export_tflite", *extra, cwd=work)
        assert completed.returncode == 0, completed.stderr[-3000:]
        found[task] = next((work / f"out_{task}").glob("topics/*/*"))
    return {"work": work, **found}


@pytest.mark.slow
def test_a_multi_label_run_writes_its_metrics_thresholds_and_figures(runs):
    run = runs["multi_label"]
    metrics = json.loads((run / "metrics.json").read_text())
    thresholds = metrics["validation"]["thresholds"]
    assert set(thresholds) == {"food", "sport", "tech"} and set(metrics["test"]["per_label"]) == set(thresholds)
    assert {"micro_f1", "macro_f1", "samples_f1", "subset_accuracy", "hamming_loss"} <= set(metrics["test"])
    assert metrics["baseline"]["analyzer"].endswith("one-vs-rest")
    saved = json.loads((run / "model" / "tfbert.json").read_text())
    assert saved["task"] == "multi_label" and saved["thresholds"] == [thresholds[n] for n in saved["labels"]]
    meta = json.loads(next((run / "saved_model").glob("*/assets.extra/tfbert/metadata.json")).read_text())
    assert meta["thresholds"] == saved["thresholds"] and "label_mask" in meta["signatures"]["serving_default"]["outputs"]
    plots = Path(str(run).replace(str(runs["work"] / "out_multi_label"), str(runs["work"] / "plots")))
    assert (plots / "label_cooccurrence_train.png").is_file() and not list(plots.glob("confusion*"))
    assert "Per label (test)" in (run / "report.md").read_text() and (run / "report.html").is_file()


@pytest.mark.slow
def test_keras_and_saved_model_decide_label_sets_alike_and_infer_prints_them(runs):
    from tfbert.predictors import KerasPredictor, SavedModelPredictor

    run, texts = runs["multi_label"], [row["text"] for row in topic_rows(40, seed=9)]
    keras, saved = KerasPredictor(run / "model"), SavedModelPredictor(run / "saved_model")
    assert keras.task == saved.task == "multi_label" and keras.thresholds == saved.thresholds
    np.testing.assert_allclose(keras.predict(texts), saved.predict(texts), atol=1e-4)
    assert (tasks.decide(keras.predict(texts), keras.thresholds) ==
            tasks.decide(saved.predict(texts), saved.thresholds)).all()
    for model in (run, run / "saved_model"):
        completed = run_cli("infer.py", "--model", str(model), "--json", *texts[:3], cwd=runs["work"])
        assert completed.returncode == 0, completed.stderr[-2000:]
        answers = [json.loads(line) for line in completed.stdout.splitlines()]
        expected = tasks.decide(saved.predict(texts[:3]), saved.thresholds)
        for answer, on in zip(answers, expected):
            assert {item["label"] for item in answer["labels"]} == {n for n, x in zip(saved.labels, on) if x}


@pytest.mark.slow
def test_a_regression_run_scores_and_infer_prints_the_score(runs):
    from tfbert.predictors import KerasPredictor, SavedModelPredictor

    run = runs["regression"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"mse", "mae", "pearson", "spearman"} <= set(metrics["test"]) and "baseline" not in metrics
    rows = [json.loads(line) for line in (run / "predictions_test.jsonl").read_text().splitlines()]
    recomputed = evaluate_regression(np.array([r["predicted"] for r in rows]), np.array([r["label"] for r in rows]))
    assert metrics["test"]["pearson"] == pytest.approx(recomputed.metrics["pearson"], abs=1e-4)
    plots = Path(str(run).replace(str(runs["work"] / "out_regression"), str(runs["work"] / "plots")))
    assert (plots / "scores_test.png").is_file()
    texts = ["good phone love", "the item"]
    keras, saved = KerasPredictor(run / "model"), SavedModelPredictor(run / "saved_model")
    np.testing.assert_allclose(keras.predict(texts), saved.predict(texts), atol=1e-4)
    from tfbert.model_choice import choose_export
    from tfbert.predictors import load_predictor

    completed = run_cli("infer.py", "--model", str(run), *texts, cwd=runs["work"])
    assert completed.returncode == 0, completed.stderr[-2000:]
    scores = [float(line.split("\t")[0].split()[1]) for line in completed.stdout.splitlines()]
    chosen = load_predictor(str(choose_export(run).path))  # compact/ when it answers as the model does
    np.testing.assert_allclose(scores, chosen.predict(texts)[:, 0], atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["multi_label", "regression"])
def test_the_compact_export_answers_as_the_saved_model_with_its_thresholds(runs, task):
    from tfbert.model_choice import answer_agreement
    from tfbert.predictors import SavedModelPredictor, TFLitePredictor
    from tfbert.task_metrics import evaluate_task

    run = runs[task]
    compact, saved = TFLitePredictor(run / "compact"), SavedModelPredictor(run / "saved_model")
    assert compact.task == saved.task == task and compact.thresholds == saved.thresholds
    assert compact.light_tokenizer is not None  # no transformers needed to answer
    texts = [row["text"] for row in topic_rows(40, seed=9)]
    np.testing.assert_allclose(compact.predict(texts), saved.predict(texts), atol=0.05)  # int8 weights: close
    # metrics.json's entry is the compact model's own test metric and agreement, recomputed here from the texts.
    metrics = json.loads((run / "metrics.json").read_text())
    entry, metric = metrics["compact"], ("pearson" if task == "regression" else "macro_f1")
    assert entry["metric"] == metric
    rows, predictions = topic_rows(200), (run / "predictions_test.jsonl").read_text().splitlines()
    test_rows = [rows[json.loads(line)["row_id"]] for line in predictions]  # the split's order
    gold = (np.array([row["score"] for row in test_rows]) if task == "regression" else
            np.array([[name in row["label"] for name in compact.labels] for row in test_rows], np.int64))
    outputs = compact.predict([row["text"] for row in test_rows])
    recomputed = evaluate_task(task, outputs, gold, compact.labels, compact.thresholds).metrics[metric]
    assert entry[f"test_{metric}"] == pytest.approx(recomputed, abs=1e-6)
    assert entry[f"test_{metric}_change"] == pytest.approx(recomputed - metrics["test"][metric], abs=1e-4)
    predicted = [json.loads(line)["predicted"] for line in predictions]
    agreement = answer_agreement(task, outputs, predicted, compact.labels, compact.thresholds)
    assert entry["test_label_agreement"] == agreement == json.loads(
        (run / "compact" / "tfbert.json").read_text())["test_label_agreement"]
    metric_name = "Pearson r" if task == "regression" else "macro-F1"
    assert f"test {metric_name} {recomputed:.4f}" in (run / "report.md").read_text()
    # infer.py on the compact export answers with its label sets at its thresholds, or its scores.
    completed = run_cli("infer.py", "--model", str(run / "compact"), "--json", *texts[:3], cwd=runs["work"])
    assert completed.returncode == 0, completed.stderr[-2000:]
    answers = [json.loads(line) for line in completed.stdout.splitlines()]
    for answer, row in zip(answers, compact.predict(texts[:3])):
        assert answer == {**answer, **tasks.answer(task, compact.labels, compact.thresholds, row)}


@pytest.mark.slow
@pytest.mark.parametrize("rows, args, fragments", [
    ([{"text": "good", "label": ["a"]}, {"text": "bad", "label": []}] * 10, [],
     ["bad.jsonl", "empty label set", "data rows 2, 4"]),
    ([{"text": "good", "label": "4"}, {"text": "bad", "label": "five"}] * 10, ["--task", "regression"],
     ["bad.jsonl", "data row 2", "'five'", "not a number"]),
    ([{"text": "good", "label": "4"}] * 20, ["--task", "regression", "--class_weight", "balanced"],
     ["--class_weight is for single-label tasks"]),
])
def test_bad_task_input_ends_with_one_line_and_exit_2(tiny_model_dir, tmp_path, rows, args, fragments):
    write_jsonl(tmp_path / "bad.jsonl", rows)
    completed = run_cli("train.py", "--train_file", "bad.jsonl", "--model_name", str(tiny_model_dir), *args,
                        cwd=tmp_path)
    assert completed.returncode == 2, completed.stderr[-2000:]
    lines = [line for line in completed.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in completed.stderr, completed.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("task", ["multi_label", "regression"])
def test_the_server_answers_with_the_saved_models_outputs_and_thresholds(runs, task):
    from test_serving import serve_py
    from tfbert.predictors import SavedModelPredictor, ServerPredictor

    base = runs[task] / "saved_model"
    with serve_py(base, "--model_name", "demo") as url:
        texts = [row["text"] for row in topic_rows(12, seed=5)]
        server, saved = ServerPredictor(f"{url}/v1/models/demo"), SavedModelPredictor(base)
        np.testing.assert_allclose(server.predict(texts), saved.predict(texts), atol=1e-5)
        assert server.task == task
        if task == "multi_label":
            np.testing.assert_allclose(server.thresholds, saved.thresholds, atol=1e-6)
            assert (tasks.decide(server.predict(texts), server.thresholds) ==
                    tasks.decide(saved.predict(texts), saved.thresholds)).all()


def test_amazon_ja_stars_is_a_regression_on_one_to_five(tmp_path):
    rows = [{"text": f"レビュー{i}", "label": i % 5} for i in range(50)]  # label 0-4 = stars 1-5
    write_jsonl(tmp_path / "train.jsonl", rows)
    corpus = load_corpus(DataConfig(dataset="amazon_ja", data_dir=str(tmp_path), label_scheme="stars"), seed=0)
    assert corpus.task == "regression"
    scores = {row["row_id"]: row["label"] for split in corpus.splits.values() for row in split}
    assert [scores[i] for i in range(5)] == [1.0, 2.0, 3.0, 4.0, 5.0] and len(scores) == 50
