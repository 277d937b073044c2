"""Shared fixtures: a tiny random BERT with its WordPiece tokenizer, and tiny labelled data.

Everything is built on the fly in seconds; nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path

import pytest

import tfbert.runtime  # noqa: F401  (sets TF_USE_LEGACY_KERAS etc. before TensorFlow loads)

# Tokenisation caches of test runs stay out of the user's ~/.cache (subprocesses inherit this).
os.environ.setdefault("TFBERT_CACHE", tempfile.mkdtemp(prefix="tfbert-test-cache-"))

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = (
    "the a this it is was and but not very really product item phone book "
    "good great excellent love perfect best happy "
    "bad awful terrible hate broken worst poor "
    "okay fine average decent mediocre normal so "
    "café naïve hello world ! ? . , 😀 商 品 最 高 で す こ の は 日 本 語"
).split()
SUBWORDS = ["##s", "##ed", "##ing", "##ly", "##er"]
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
VOCAB = list(dict.fromkeys(SPECIAL_TOKENS + WORDS + SUBWORDS + list(_LETTERS) + ["##" + c for c in _LETTERS]))

CLASS_WORDS = {
    "neg": ["bad", "awful", "terrible", "hate", "broken", "worst", "poor"],
    "neu": ["okay", "fine", "average", "decent", "mediocre", "normal"],
    "pos": ["good", "great", "excellent", "love", "perfect", "best", "happy"],
}
FILLER = ["the", "a", "this", "it", "is", "was", "and", "very", "really", "product", "item", "phone", "book"]


def write_tiny_model(folder: Path, *, num_hidden_layers: int = 2, hidden_size: int = 16) -> Path:
    """Save a randomly initialised 2-layer BERT encoder and its tokenizer, like a hub checkpoint."""
    from transformers import BertConfig, BertTokenizerFast, TFBertModel

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    tokenizer.save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=64,
        initializer_range=0.2,  # larger than BERT's 0.02 so that a 2-layer model learns in a few steps
    )
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)  # the same random weights in every session, whatever ran before
    model = TFBertModel(config)
    model(model.dummy_inputs)
    model.save_pretrained(folder)
    return folder


def tiny_classifier(family: str, num_labels: int = 3):
    """A random 2-layer RoBERTa, ELECTRA, ALBERT or DistilBERT sequence classifier (vocabulary of 40)."""
    import tensorflow as tf
    from transformers import (AlbertConfig, DistilBertConfig, ElectraConfig, RobertaConfig,
                              TFAutoModelForSequenceClassification)

    sizes = dict(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                 max_position_embeddings=40, num_labels=num_labels)
    config = {
        "roberta": lambda: RobertaConfig(pad_token_id=1, **sizes),
        "electra": lambda: ElectraConfig(embedding_size=8, **sizes),
        "albert": lambda: AlbertConfig(embedding_size=8, **sizes),
        "distilbert": lambda: DistilBertConfig(vocab_size=40, dim=16, n_layers=2, n_heads=2, hidden_dim=32,
                                               max_position_embeddings=40, num_labels=num_labels),
    }[family]()
    tf.keras.utils.set_random_seed(0)
    model = TFAutoModelForSequenceClassification.from_config(config)
    model(model.dummy_inputs, training=False)
    return model


def make_rows(n: int, seed: int = 0) -> list[dict]:
    """Short review-like texts whose label is given away by one sentiment word."""
    rng = random.Random(seed)
    labels = sorted(CLASS_WORDS)
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        words = rng.sample(FILLER, 3) + [rng.choice(CLASS_WORDS[label])] + rng.sample(FILLER, 2)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    rng.shuffle(rows)
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A folder holding a tiny TF BERT encoder (tf_model.h5) and its WordPiece tokenizer."""
    return write_tiny_model(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def tiny_rows() -> list[dict]:
    return make_rows(90)


@pytest.fixture()
def tiny_jsonl(tmp_path, tiny_rows) -> Path:
    return write_jsonl(tmp_path / "tiny.jsonl", tiny_rows)
