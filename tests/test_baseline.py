"""The TF-IDF + logistic-regression baseline: analyzer choice, learning, determinism, metrics."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CLASS_WORDS, make_rows

from tfbert.baseline import BaselineSettings, baseline_metrics, choose_analyzer, fit_baseline, is_spaced

LABELS = sorted(CLASS_WORDS)

JAPANESE = [
    "この商品は最高です。とても満足しています。",
    "配送が遅くて残念でした。二度と買いません。",
    "普通の品質だと思います。値段相応です。",
    "スマートフォンの新機種が発表された。価格は未定。",
]


def _split(rows: list[dict]) -> dict:
    return {"text": [r["text"] for r in rows], "label": [LABELS.index(r["label"]) for r in rows]}


@pytest.fixture(scope="module")
def splits() -> dict:
    rows = make_rows(300, seed=1)
    return {"train": _split(rows[:240]), "validation": _split(rows[240:270]), "test": _split(rows[270:])}


def test_spaced_text_gets_word_ngrams_and_japanese_gets_character_ngrams():
    assert choose_analyzer([r["text"] for r in make_rows(30)]) == ("word", (1, 2))
    assert choose_analyzer(JAPANESE) == ("char", (1, 2))
    # A title and body on two lines, or a stray space, do not make Japanese "spaced".
    assert not is_spaced("ニュース速報\n新しいスマートフォンが今日発表されました。価格は未定です。")
    assert is_spaced("free entry in 2 a wkly comp to win FA Cup final tkts")
    assert fit_baseline(JAPANESE, [0, 1, 0, 1], seed=0).analyzer == "char 1-2"


def test_learns_a_separable_corpus_with_probabilities_per_class(splits):
    baseline = fit_baseline(splits["train"]["text"], splits["train"]["label"], seed=0)
    assert baseline.analyzer == "word 1-2"
    probabilities = baseline.predict_proba(splits["test"]["text"])
    assert probabilities.shape == (30, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    metrics = baseline_metrics(splits, LABELS, seed=0)
    assert metrics["test"]["macro_f1"] > 0.9 and metrics["validation"]["macro_f1"] > 0.9
    assert metrics["analyzer"] == "word 1-2" and metrics["train_examples"] == 240
    assert 0 <= metrics["fit_seconds"] <= metrics["seconds"] < 60


def test_same_seed_same_probabilities(splits):
    first, second = (fit_baseline(splits["train"]["text"], splits["train"]["label"], seed=7) for _ in range(2))
    test = splits["test"]["text"]
    np.testing.assert_array_equal(first.predict_proba(test), second.predict_proba(test))


def test_metrics_equal_a_recomputation_with_sklearn(splits):
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    weak = BaselineSettings(C=0.05)  # makes mistakes, so that precision and recall differ
    metrics = baseline_metrics(splits, LABELS, seed=0, settings=weak)
    baseline = fit_baseline(splits["train"]["text"], splits["train"]["label"], seed=0, settings=weak)
    for name in ("validation", "test"):
        gold, predicted = splits[name]["label"], baseline.predict_proba(splits[name]["text"]).argmax(axis=1)
        assert metrics[name]["accuracy"] == pytest.approx(accuracy_score(gold, predicted))
        assert metrics[name]["macro_f1"] == pytest.approx(f1_score(gold, predicted, average="macro"))
        assert metrics[name]["macro_precision"] == pytest.approx(
            precision_score(gold, predicted, average="macro", zero_division=0))
        assert metrics[name]["macro_recall"] == pytest.approx(recall_score(gold, predicted, average="macro"))


def test_a_class_missing_from_training_gets_a_zero_column():
    texts, labels = ["good item", "bad item", "great phone", "awful phone"], [0, 2, 0, 2]
    probabilities = fit_baseline(texts, labels, seed=0, num_classes=4).predict_proba(["good phone", "bad"])
    assert probabilities.shape == (2, 4)
    assert (probabilities[:, [1, 3]] == 0).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    single = fit_baseline(["only", "one class"], [1, 1], seed=0, num_classes=2)
    np.testing.assert_array_equal(single.predict_proba(["anything"]), [[0.0, 1.0]])


def test_text_pairs_are_read_and_must_match_in_length():
    texts = ["the phone", "the phone", "the book", "the book"] * 5
    pairs = ["good", "bad", "great", "awful"] * 5
    labels = [1, 0, 1, 0] * 5
    baseline = fit_baseline(texts, labels, seed=0, text_pairs=pairs)
    assert baseline.predict_proba(["the book"], text_pairs=["good"]).argmax() == 1
    with pytest.raises(ValueError, match="text pairs"):
        baseline.predict_proba(["a", "b"], text_pairs=["c"])


def test_reads_the_splits_of_a_corpus(tmp_path):
    from conftest import write_jsonl

    from tfbert.config import DataConfig
    from tfbert.data.corpus import load_corpus

    write_jsonl(tmp_path / "reviews.jsonl", make_rows(120))
    corpus = load_corpus(DataConfig(train_file=str(tmp_path / "reviews.jsonl")), seed=0)
    metrics = baseline_metrics(corpus.splits, corpus.label_names, seed=0)
    assert metrics["test"]["n"] == corpus.sizes()["test"] and metrics["test"]["macro_f1"] > 0.8
    frames = {name: split.to_pandas() for name, split in corpus.splits.items()}
    assert baseline_metrics(frames, corpus.label_names, seed=0)["test"] == metrics["test"]


def test_a_model_below_the_baseline_is_warned_about():
    from tfbert.baseline import below_baseline_warning

    floor = {"analyzer": "char 1-2", "test": {"macro_f1": 0.9}}
    assert below_baseline_warning(0.9, floor) is None
    assert below_baseline_warning(0.95, floor) is None
    warning = below_baseline_warning(0.8999, floor)
    assert "0.8999 is below the TF-IDF baseline's 0.9000 (char 1-2)" in warning
