"""A TF-IDF + logistic-regression floor: what a fine-tuned encoder has to beat to be worth its cost.

    train texts -> TF-IDF n-grams (words where texts have spaces, characters where they do not, e.g. Japanese)
                -> logistic regression -> class probabilities -> the same metrics as the model's

Example:
    >>> baseline = fit_baseline(["good phone", "bad phone", "great book", "awful book"], [1, 0, 1, 0], seed=0)
    >>> baseline.analyzer
    'word 1-2'
    >>> baseline.predict_proba(["good book"]).shape
    (1, 2)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

# Joins a text and its pair into one document; a word of its own, so word n-grams mark where the pair starts.
PAIR_SEPARATOR = " [SEP] "


@dataclass(frozen=True)
class BaselineSettings:
    """How the baseline turns texts into features and fits the classifier."""

    # A text counts as spaced when it has 2+ whitespace-separated tokens of at most this many characters on
    # average (English ~5, Korean ~4; unspaced Japanese "tokens" are whole sentences, tens of characters).
    max_mean_word_chars: float = 12.0
    # Words are used when at least this share of the training texts is spaced.
    min_spaced_share: float = 0.5
    word_ngrams: tuple[int, int] = (1, 2)
    # Character 1-2-grams reach the measured floor on livedoor news (test macro-F1 0.949, 58 s on a busy 2-core
    # machine); 2-4-grams score 0.958 but take 3x as long: the cost grows with the n-grams per text.
    char_ngrams: tuple[int, int] = (1, 2)
    # Caps on the vocabulary and on the characters read per text bound the fit on very long documents; livedoor
    # articles (at most 12,162 characters) are read whole: cutting them at 3,000 cost 0.003 test macro-F1.
    max_features: int = 100_000
    max_chars: Optional[int] = 20_000
    min_df: int = 2
    C: float = 10.0
    max_iter: int = 1_000


@dataclass
class Baseline:
    """A fitted TF-IDF + logistic-regression classifier over label ids 0..num_classes-1."""

    pipeline: Any
    analyzer: str
    num_classes: int
    classes: np.ndarray  # label ids seen in training: the pipeline's probability columns, in order
    settings: BaselineSettings = field(default_factory=BaselineSettings)

    def predict_proba(self, texts: Sequence[str], text_pairs: Optional[Sequence[str]] = None) -> np.ndarray:
        """Class probabilities [n, num_classes], columns in label-id order; a class absent from training gets 0.

        Example:
            >>> baseline = fit_baseline(["good", "bad"], [1, 0], seed=0, num_classes=3)  # doctest: +SKIP
            >>> baseline.predict_proba(["good"]).shape  # doctest: +SKIP
            (1, 3)
        """
        documents = _documents(texts, text_pairs, self.settings.max_chars)
        probabilities = np.zeros((len(documents), self.num_classes), dtype=np.float64)
        if not documents:
            return probabilities
        if self.pipeline is None:  # a single training class: it is always the answer
            probabilities[:, self.classes[0]] = 1.0
            return probabilities
        probabilities[:, self.classes] = self.pipeline.predict_proba(documents)
        return probabilities


def is_spaced(text: str, max_mean_word_chars: float = BaselineSettings.max_mean_word_chars) -> bool:
    """Whether a text is written with spaces between its words.

    Example:
        >>> is_spaced("the phone is great"), is_spaced("この商品は最高です。とても良い")
        (True, False)
    """
    words = text.split()
    return len(words) >= 2 and sum(map(len, words)) / len(words) <= max_mean_word_chars


def choose_analyzer(texts: Sequence[str],
                    settings: BaselineSettings = BaselineSettings()) -> tuple[str, tuple[int, int]]:
    """``("word", (1, 2))`` when most texts have spaces between words, else ``("char", (1, 2))``.

    Example:
        >>> choose_analyzer(["a good phone", "bad item"])
        ('word', (1, 2))
    """
    spaced = sum(is_spaced(text, settings.max_mean_word_chars) for text in texts)
    if texts and spaced / len(texts) >= settings.min_spaced_share:
        return "word", settings.word_ngrams
    return "char", settings.char_ngrams


def fit_baseline(
    train_texts: Sequence[str],
    train_labels: Sequence[int],
    *,
    seed: int,
    text_pairs: Optional[Sequence[str]] = None,
    num_classes: Optional[int] = None,
    settings: BaselineSettings = BaselineSettings(),
) -> Baseline:
    """Fit TF-IDF n-grams + logistic regression on the training split.

    Args:
        train_texts: the training texts.
        train_labels: their label ids, 0..num_classes-1.
        seed: seeds the solver, so a refit gives the same probabilities.
        text_pairs: second texts of text-pair tasks, joined to the first with ``PAIR_SEPARATOR``.
        num_classes: number of classes (default: the largest label id + 1).
        settings: features and classifier settings.

    Example:
        >>> baseline = fit_baseline(["good", "bad", "great", "awful"], [1, 0, 1, 0], seed=0)
        >>> int(baseline.predict_proba(["great"]).argmax())
        1
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    labels = np.asarray(train_labels, dtype=np.int64)
    if len(labels) != len(train_texts):
        raise ValueError(f"{len(train_texts)} texts but {len(labels)} labels")
    num_classes = int(num_classes if num_classes is not None else (labels.max() + 1 if len(labels) else 0))
    documents = _documents(train_texts, text_pairs, settings.max_chars)
    kind, ngrams = choose_analyzer(list(train_texts), settings)
    analyzer = f"{kind} {ngrams[0]}-{ngrams[1]}"
    classes = np.unique(labels)
    if len(classes) < 2:
        return Baseline(pipeline=None, analyzer=analyzer, num_classes=num_classes, classes=classes, settings=settings)
    pipeline = make_pipeline(
        TfidfVectorizer(
            analyzer=kind,
            ngram_range=ngrams,
            sublinear_tf=True,
            # min_df drops one-off n-grams, but never below a document: tiny corpora keep every feature.
            min_df=settings.min_df if len(documents) >= 10 * settings.min_df else 1,
            max_features=settings.max_features,
            dtype=np.float32,
        ),
        LogisticRegression(C=settings.C, max_iter=settings.max_iter, random_state=seed),
    )
    pipeline.fit(documents, labels)
    return Baseline(pipeline=pipeline, analyzer=analyzer, num_classes=num_classes, classes=classes, settings=settings)


def baseline_metrics(
    splits: dict,
    label_names: list[str],
    *,
    seed: int,
    settings: BaselineSettings = BaselineSettings(),
) -> dict:
    """Fit the baseline on ``splits["train"]`` and score it on validation and test like the model.

    Args:
        splits: train, validation and test, each with columns text[, text_pair] and label (ids); a
            ``datasets.DatasetDict`` (``Corpus.splits``), a dict of DataFrames or a dict of dicts of lists.
        label_names: class names, index = id.
        seed: seeds the solver.
        settings: features and classifier settings.

    Returns:
        ``{"analyzer", "seconds", "fit_seconds", "train_examples", "validation": {...}, "test": {...}}`` with
        the metrics of ``tfbert.evaluation.evaluate_predictions`` (accuracy, macro_f1, ...) per split.

    Example:
        >>> splits = {name: {"text": ["good", "bad", "great", "awful"], "label": [1, 0, 1, 0]}
        ...           for name in ("train", "validation", "test")}
        >>> baseline_metrics(splits, ["neg", "pos"], seed=0)["test"]["accuracy"]
        1.0
    """
    from tfbert.evaluation import evaluate_predictions

    started = time.perf_counter()
    train = splits["train"]
    baseline = fit_baseline(
        list(_column(train, "text")), _column(train, "label"), seed=seed, text_pairs=_column(train, "text_pair"),
        num_classes=len(label_names), settings=settings,
    )
    fit_seconds = time.perf_counter() - started
    result: dict = {"analyzer": baseline.analyzer, "train_examples": len(_column(train, "label"))}
    for name in ("validation", "test"):
        split = splits[name]
        probabilities = baseline.predict_proba(list(_column(split, "text")), _column(split, "text_pair"))
        result[name] = evaluate_predictions(probabilities, np.asarray(_column(split, "label")), label_names).metrics
    result["fit_seconds"] = round(fit_seconds, 2)
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def _column(split, name: str) -> Optional[Sequence]:
    """A column of a Dataset, DataFrame or dict of lists, or None when it has no such column."""
    for attribute in ("column_names", "columns"):  # Dataset, DataFrame (an Index has no truth value: no `or`)
        if hasattr(split, attribute):
            names = list(getattr(split, attribute))
            break
    else:
        names = list(split.keys())
    if name not in names:
        return None
    column = split[name]
    return column.tolist() if hasattr(column, "tolist") else column


def _documents(texts: Sequence[str], text_pairs: Optional[Sequence[str]], max_chars: Optional[int]) -> list[str]:
    if text_pairs is not None and len(text_pairs) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(text_pairs)} text pairs")
    # The pair is cut with its text so that a long first text cannot push it out entirely.
    cut = (lambda s: s[:max_chars]) if max_chars else (lambda s: s)
    if text_pairs is None:
        return [cut(str(text)) for text in texts]
    return [cut(str(text)) + PAIR_SEPARATOR + cut(str(pair)) for text, pair in zip(texts, text_pairs)]


def below_baseline_warning(model_test_macro_f1: float, baseline: dict) -> Optional[str]:
    """The warning a run gets when its model scores under the baseline on test, else None.

    Example:
        >>> below_baseline_warning(0.80, {"analyzer": "word 1-2", "test": {"macro_f1": 0.87}})
        'the model's test macro-F1 0.8000 is below the TF-IDF baseline's 0.8700 (word 1-2): it did not earn its cost'
    """
    floor = baseline["test"]["macro_f1"]
    if model_test_macro_f1 >= floor:
        return None
    return (f"the model's test macro-F1 {model_test_macro_f1:.4f} is below the TF-IDF baseline's {floor:.4f} "
            f"({baseline['analyzer']}): it did not earn its cost")
