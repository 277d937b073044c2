"""Tokenisation (with head/tail/head+tail truncation) and the tf.data pipelines fed to Keras.

Training batches group texts of similar length (bucketing, shuffled between buckets) and are
padded only to their longest member; evaluation keeps the dataset's order.

Example:
    >>> encoded = tokenize(corpus.splits, tokenizer, max_length=128)  # doctest: +SKIP
    >>> train = training_dataset(encoded["train"], tokenizer, batch_size=32, seed=42)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import datasets
import numpy as np

# HEAD_SHARE stays importable from here: graph_tokenizers reads it.
from tfbert.light_tokenizer import HEAD_SHARE, pair_budget, truncate_ids  # noqa: F401

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def encode_batch(tokenizer, texts: list[str], pairs: Optional[list[str]], max_length: int, truncation: str,
                 count_tokens: bool = True, stride: Optional[int] = None) -> dict:
    """Token ids for a batch of texts, truncated to ``max_length`` with [CLS]/[SEP] kept.

    With ``count_tokens`` also returns ``n_tokens``: each example's length before truncation, for the
    length report. Predictors leave it out: with head truncation the texts are then tokenised once, not twice.
    With a ``stride`` (``--long_text window``) also returns ``window_ids``: every window of each text (and of pairs
    their ``window_token_type_ids``: tfbert.windows); the model inputs are then its first window.
    """
    from tfbert import windows

    plain_a = plain_b = None  # untruncated ids: to count tokens, and for the truncations the tokenizer lacks
    if count_tokens or truncation != "head" or stride is not None:
        plain_a = tokenizer(texts, add_special_tokens=False)["input_ids"]
        plain_b = tokenizer(pairs, add_special_tokens=False)["input_ids"] if pairs is not None else None
    specials = tokenizer.num_special_tokens_to_add(pair=pairs is not None)
    if stride is not None:
        encoded = windows.encode_windows(tokenizer, plain_a, max_length - specials, stride, plain_b)
    elif truncation == "head":
        encoded = dict(tokenizer(texts, pairs, truncation=True, max_length=max_length))
    else:
        encoded = {key: [] for key in ("input_ids", "token_type_ids", "attention_mask")}
        budget = max_length - specials
        for i, a in enumerate(plain_a):
            b = plain_b[i] if plain_b else None
            if b is not None:  # shorten the longer text first, as the tokenizer's longest_first does
                b = truncate_ids(b, pair_budget(len(a), len(b), budget), truncation)
                a = truncate_ids(a, budget - len(b), truncation)
            else:
                a = truncate_ids(a, budget, truncation)
            ids = tokenizer.build_inputs_with_special_tokens(a, b)
            encoded["input_ids"].append(ids)
            encoded["token_type_ids"].append(tokenizer.create_token_type_ids_from_sequences(a, b))
            encoded["attention_mask"].append([1] * len(ids))
    encoded = {key: value for key, value in encoded.items()
               if key in tokenizer.model_input_names or key in (windows.WINDOW_COLUMN, windows.WINDOW_TYPES)}
    if count_tokens:
        encoded["n_tokens"] = [len(a) + specials + (len(plain_b[i]) if plain_b else 0) for i, a in enumerate(plain_a)]
    return encoded


TOKENIZATION_VERSION = 1  # bump when encode_batch changes what it writes


def tokenizer_digest(tokenizer) -> Optional[str]:
    """A digest of the tokenizer's whole state, or None when it cannot be hashed (a MeCab tagger)."""
    from datasets.fingerprint import Hasher

    try:
        return Hasher.hash(tokenizer)
    except Exception:
        return None


def tokenization_cache_key(split: datasets.Dataset, tokenizer_hash: str, max_length: int, truncation: str,
                           stride: Optional[int] = None) -> str:
    """A digest of everything a tokenised split depends on: its rows, the tokenizer, the settings."""
    import hashlib

    import pyarrow as pa

    sink = pa.BufferOutputStream()
    table = split.with_format("arrow")[:]  # the rows in the split's order
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    digest = hashlib.sha256(sink.getvalue().to_pybytes())
    digest.update(f"{tokenizer_hash}|{max_length}|{truncation}|{stride}|{TOKENIZATION_VERSION}".encode())
    return digest.hexdigest()[:32]


def tokenize(splits: datasets.DatasetDict, tokenizer, max_length: int, truncation: str = "head",
             cache_dir: Optional[str] = None, stride: Optional[int] = None) -> datasets.DatasetDict:
    """Add the model's input columns and ``n_tokens`` to every split (batched, fast tokenizer); with a ``stride``,
    also every text's windows (``window_ids``: tfbert.windows).

    With ``cache_dir``, each tokenised split is kept there under a digest of its rows, the tokenizer
    and the settings, and read back instead of tokenising again.
    """

    from tfbert.tokenizers import warn_unspaced_runs

    def encode(batch: dict) -> dict:
        return encode_batch(tokenizer, batch["text"], batch.get("text_pair"), max_length, truncation, stride=stride)

    first = next(iter(splits.values()))
    warn_unspaced_runs(tokenizer, first[:2000]["text"])

    cache_files = None
    tokenizer_hash = tokenizer_digest(tokenizer) if cache_dir is not None else None  # hashed once, not per split
    if tokenizer_hash is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        keys = {name: tokenization_cache_key(split, tokenizer_hash, max_length, truncation, stride)
                for name, split in splits.items()}
        cache_files = {name: str(Path(cache_dir) / f"{key}.arrow") for name, key in keys.items()}
    return splits.map(encode, batched=True, batch_size=1000, desc="tokenizing", cache_file_names=cache_files)


def _input_columns(dataset: datasets.Dataset) -> list[str]:
    return [column for column in MODEL_INPUTS if column in dataset.column_names]


def _padding_values(tokenizer, columns: list[str]):
    import tensorflow as tf

    values = {
        "input_ids": tokenizer.pad_token_id or 0,
        "attention_mask": 0,
        "token_type_ids": getattr(tokenizer, "pad_token_type_id", 0),
    }
    return {column: tf.constant(values[column], tf.int64) for column in columns}


def _ragged_columns(encoded: datasets.Dataset, columns: list[str]) -> dict:
    """Token-id columns as int64 RaggedTensors, one row per example.

    Not datasets' to_tf_dataset: it infers each example's shape from a sample of 20 and fixes a
    dimension when they agree, which breaks when most texts are cut at max_length (livedoor).
    """
    import tensorflow as tf

    ragged = {}
    for column in columns:
        rows = encoded[column]
        lengths = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
        flat = np.fromiter((token for row in rows for token in row), dtype=np.int64, count=int(lengths.sum()))
        ragged[column] = tf.RaggedTensor.from_row_lengths(flat, lengths)
    return ragged


def _dense_rows(features: dict) -> dict:
    """Rows sliced from a RaggedTensor keep a ragged type spec; padded_batch wants plain tensors."""
    import tensorflow as tf

    return {key: value.to_tensor() if isinstance(value, tf.RaggedTensor) else tf.convert_to_tensor(value)
            for key, value in features.items()}


def bucket_boundaries(max_length: int) -> list[int]:
    """Sequence-length bucket edges: every 16 tokens up to 128, then every 64."""
    edges = list(range(16, min(max_length, 128) + 1, 16)) + list(range(192, max_length + 1, 64))
    return [edge for edge in edges if edge < max_length] + [max_length + 1]


# Batch widths may be rounded up to a multiple (fewer distinct shapes to compile). The functions here
# default to no rounding; train.py rounds training batches to 8 (--pad_to_multiple_of), which measured
# the same speed as no rounding with fused ops on (59.2 vs 59.1 examples/s, AG News, 1 epoch).
PAD_MULTIPLE = 1


PREFETCH_BATCHES = 2


def _prefetched(batches):
    """``batches`` with a fixed prefetch depth and tf.data's autotuning off.

    Autotuning runs a model thread per iterator, and deleting the iterator waits for that thread (py-spy
    --native: the main thread idle in ~RootDataset::Iterator -> ~LogicalThreadWrapper for 20-60 s after
    fit's last epoch, and again after predict). These pipelines have no parallel stage to tune.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return batches.prefetch(PREFETCH_BATCHES).with_options(options)


def _pad_to_multiple(features: dict, pad_values: dict, multiple: int) -> dict:
    import tensorflow as tf

    length = tf.shape(features["input_ids"])[1]
    extra = (multiple - length % multiple) % multiple
    return {key: tf.pad(value, [[0, 0], [0, extra]], constant_values=pad_values[key]) for key, value in features.items()}


def training_dataset(encoded: datasets.Dataset, tokenizer, batch_size: int, seed: int,
                     pad_multiple: int = PAD_MULTIPLE, repeat: bool = False):
    """Shuffled, length-bucketed (features, label) batches for ``fit``, padded to their longest
    member rounded up to ``pad_multiple`` tokens (1: no rounding). A windowed split gives one example per window.

    With ``repeat`` the stream is endless (reshuffled every pass) and ``fit`` takes steps_per_epoch:
    Keras then keeps one iterator, where re-creating it between epochs stalled AG News training for
    about a minute (an idle wait in Model.fit's epoch loop, seen with py-spy; likely the iterator deletion
    that :func:`_prefetched` explains).
    """
    import tensorflow as tf

    from tfbert import windows

    feature = encoded.features["label"]  # class ids (ClassLabel or ints), else multi-label rows or scores
    single_label = isinstance(feature, datasets.ClassLabel) or "int" in getattr(feature, "dtype", "")
    labels = np.asarray(encoded["label"], np.int64 if single_label else np.float32)  # the other tasks' as [n, outputs]
    labels = labels if single_label else labels.reshape(len(encoded), -1)
    if windows.is_windowed(encoded):  # each window is an example with its document's label
        rows, document = windows.window_rows(encoded)
        encoded, labels = datasets.Dataset.from_dict(rows), labels[document]
    columns = _input_columns(encoded)
    examples = tf.data.Dataset.from_tensor_slices((_ragged_columns(encoded, columns), labels)).map(
        lambda features, label: (_dense_rows(features), label))
    boundaries = bucket_boundaries(max(len(ids) for ids in encoded["input_ids"]))
    pad_values = _padding_values(tokenizer, columns)
    batches = (
        examples
        .shuffle(len(encoded), seed=seed, reshuffle_each_iteration=True)
        .repeat(-1 if repeat else 1)
        .bucket_by_sequence_length(
            element_length_func=lambda features, label: tf.shape(features["input_ids"])[0],
            bucket_boundaries=boundaries,
            bucket_batch_sizes=[batch_size] * (len(boundaries) + 1),
            padding_values=(pad_values, tf.constant(0, labels.dtype)),
        )
    )
    if pad_multiple > 1:
        batches = batches.map(lambda features, label: (_pad_to_multiple(features, pad_values, pad_multiple), label))
    return _prefetched(batches)


def prediction_order(encoded: datasets.Dataset) -> np.ndarray:
    """Indices sorting examples by length, so prediction batches carry little padding."""
    return np.argsort(np.array([len(ids) for ids in encoded["input_ids"]]), kind="stable")


def inference_dataset(encoded: datasets.Dataset, tokenizer, batch_size: int, order: Optional[np.ndarray] = None,
                      pad_multiple: int = PAD_MULTIPLE):
    """Padded feature batches in the dataset's order (or in ``order``), without labels."""
    import tensorflow as tf

    columns = _input_columns(encoded)
    if order is not None:
        encoded = encoded.select(order)
    pad_values = _padding_values(tokenizer, columns)
    batches = tf.data.Dataset.from_tensor_slices(_ragged_columns(encoded, columns)).map(_dense_rows).padded_batch(
        batch_size, padding_values=pad_values)
    if pad_multiple > 1:
        batches = batches.map(lambda features: _pad_to_multiple(features, pad_values, pad_multiple))
    return _prefetched(batches)
