"""Long documents read whole (``--long_text window``): overlapping windows of token ids, one answer per document.

A text longer than ``max_length`` tokens becomes windows of ``budget = max_length - special tokens`` pieces, each
starting ``budget - stride`` pieces after the one before, until one reaches the text's end: the windows the Hugging
Face fast tokenizer returns with ``return_overflowing_tokens=True, stride=stride`` (tests/test_windows.py checks
this), built here from the plain ids so that every tokenizer (slow SentencePiece, MeCab) gets them.

Training sees each window as an example carrying its document's label. Evaluation, every predictor and the
SavedModel pool the windows' scores per document (``--window_pool mean|max``), then apply the task's activation:

    single_label  log-softmax of each window's logits (its logits up to a per-window constant, so their mean gives
                  the softmax of the mean of the logits), pooled, then softmax
    multi_label   the logits, pooled, then a sigmoid per label (max: the most confident window per label)
    regression    the scores, pooled

Example:
    >>> split_windows(list(range(10)), budget=4, stride=2)
    [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7], [6, 7, 8, 9]]
    >>> pool(np.array([[0.0, 2.0], [2.0, 0.0], [1.0, 1.0]]), np.array([0, 0, 1]), 2, "mean").tolist()
    [[1.0, 1.0], [1.0, 1.0]]
"""

from __future__ import annotations

from typing import Optional

import numpy as np

WINDOW_COLUMN = "window_ids"  # a tokenised split's windows per document: token ids with the special tokens
WINDOW_TYPES = "window_token_type_ids"  # and their token types, for text pairs (a single text's are all 0)
# What the export's predict_windows signature takes beside the token ids of predict_ids.
WINDOW_INPUTS = {"window_document": "int64 [windows]: the index of the text each row is a window of (0, 1, ...); "
                                    "one output row per text"}


def stride_of(settings) -> Optional[int]:
    """The windows' stride of a DataConfig or ModelSettings that reads long texts in windows, else None.

    Example:
        >>> from tfbert.model_settings import ModelSettings
        >>> stride_of(ModelSettings(long_text="window", stride=32)), stride_of(ModelSettings())
        (32, None)
    """
    return settings.stride if settings.long_text == "window" else None


def check_stride(tokenizer, data, text_pairs: bool) -> None:
    """Raise TfbertError when ``data`` (a DataConfig) asks for windows its ``--stride`` cannot make."""
    from tfbert.errors import TfbertError

    if stride_of(data) is not None:
        problem = window_problem(data.max_length - tokenizer.num_special_tokens_to_add(pair=text_pairs), data.stride)
        if problem:
            raise TfbertError(problem)


def split_windows(pieces: list[int], budget: int, stride: int) -> list[list[int]]:
    """``pieces`` (token ids without special tokens) in windows of ``budget``, each sharing ``stride`` pieces with
    the one before; one (maybe empty) window for a text that fits.

    Example:
        >>> split_windows([1, 2, 3, 4, 5], budget=3, stride=1)
        [[1, 2, 3], [3, 4, 5]]
    """
    windows, start = [], 0
    while True:
        windows.append(pieces[start:start + budget])
        if start + budget >= len(pieces):
            return windows
        start += budget - stride


def window_problem(budget: int, stride: int) -> Optional[str]:
    """Why ``stride`` cannot make windows of ``budget`` pieces, or None."""
    if stride < 0 or stride >= budget:
        return (f"--stride {stride}: windows of --max_length hold {budget} tokens besides the special ones; "
                f"give a stride from 0 to {budget - 1} (tokens a window shares with the one before)")
    return None


def first_text_pieces(budget: int, stride: int) -> int:
    """Pieces of a pair's first text every window keeps when the pair does not fit in one: at most half of what a
    window adds beyond ``stride``, so that each window moves at least as far through the second text as the first
    one takes."""
    return (budget - stride) // 2


def encode_windows(tokenizer, plain_a: list[list[int]], budget: int, stride: int,
                   plain_b: Optional[list[list[int]]] = None) -> dict:
    """Model inputs of the first window of each text and ``window_ids`` (with pairs also ``window_token_type_ids``):
    every window of it, framed with the special tokens.

    A pair (title and body) keeps its first text, cut to :func:`first_text_pieces`, in every window and reads the
    second in windows: the Hugging Face tokenizer's ``truncation="only_second"`` overflow.
    """
    encoded = {"input_ids": [], "attention_mask": [], "token_type_ids": [], WINDOW_COLUMN: [], WINDOW_TYPES: []}
    for i, pieces in enumerate(plain_a):
        rest = pieces if plain_b is None else plain_b[i]
        first = None
        if plain_b is not None:  # a pair that fits is left whole
            first = pieces if len(pieces) + len(rest) <= budget else pieces[:first_text_pieces(budget, stride)]
        sequences = [(first, part) if first is not None else (part,)
                     for part in split_windows(rest, budget - len(first or ()), stride)]
        framed = [tokenizer.build_inputs_with_special_tokens(*sequence) for sequence in sequences]
        types = [tokenizer.create_token_type_ids_from_sequences(*sequence) for sequence in sequences]
        encoded[WINDOW_COLUMN].append(framed)
        encoded[WINDOW_TYPES].append(types)
        encoded["input_ids"].append(framed[0])
        encoded["attention_mask"].append([1] * len(framed[0]))
        encoded["token_type_ids"].append(types[0])
    if plain_b is None:  # a single text's token types are all 0
        del encoded[WINDOW_TYPES]
    return encoded


def column_names(encoded) -> list[str]:
    """The columns of a tokenised split: a datasets.Dataset or encode_batch's dict."""
    return encoded.column_names if hasattr(encoded, "column_names") else list(encoded)


def is_windowed(encoded) -> bool:
    """Whether a tokenised split (a datasets.Dataset or encode_batch's dict) holds windows."""
    return WINDOW_COLUMN in column_names(encoded)


def window_rows(encoded) -> tuple[dict, np.ndarray]:
    """(the model inputs the split has, one row per window, as lists; each window's document index).

    Windows have no padding, so their attention mask is all ones; a single text's token types are all zeros.
    """
    nested = encoded[WINDOW_COLUMN]
    counts = np.fromiter((len(windows) for windows in nested), np.int64, count=len(nested))
    ids = [window for windows in nested for window in windows]
    names = column_names(encoded)
    rows = {"input_ids": ids}
    if "attention_mask" in names:
        rows["attention_mask"] = [[1] * len(window) for window in ids]
    if "token_type_ids" in names:
        rows["token_type_ids"] = ([types for windows in encoded[WINDOW_TYPES] for types in windows]
                                  if WINDOW_TYPES in names else [[0] * len(window) for window in ids])
    return rows, np.repeat(np.arange(len(nested)), counts)


def window_count(encoded) -> int:
    """Examples the model sees in a tokenised split: its windows, or its texts."""
    if not is_windowed(encoded):
        return len(encoded)
    return int(sum(len(windows) for windows in encoded[WINDOW_COLUMN]))


def token_count(encoded) -> int:
    """Tokens the model reads in one pass over a tokenised split (every window of a windowed one)."""
    rows = encoded[WINDOW_COLUMN] if is_windowed(encoded) else [encoded["input_ids"]]
    return int(sum(len(ids) for text in rows for ids in text))


def describe_reading(encoded_train, share: float, max_length: int) -> str:
    """How the training texts over ``max_length`` tokens (``share`` of them) are read, for the data line."""
    if is_windowed(encoded_train):
        return f"{share:.1%} of training texts over {max_length} tokens, read in {window_count(encoded_train)} windows"
    return f"{share:.1%} of training texts truncated at {max_length} tokens"


def window_scores(task: str, logits: np.ndarray) -> np.ndarray:
    """What is pooled of each window's logits [windows, outputs] (float64): see the module docstring."""
    from tfbert.tasks import log_softmax

    logits = np.asarray(logits, np.float64)
    return log_softmax(logits) if task == "single_label" else logits


def pool(scores: np.ndarray, document: np.ndarray, n_documents: int, how: str = "mean") -> np.ndarray:
    """Per-document mean or max of window ``scores`` [windows, outputs]; ``document``: each window's document."""
    scores = np.asarray(scores, np.float64)
    if how == "max":
        pooled = np.full((n_documents, scores.shape[1]), -np.inf)
        np.maximum.at(pooled, document, scores)
        return pooled
    sums = np.zeros((n_documents, scores.shape[1]))
    np.add.at(sums, document, scores)
    return sums / np.bincount(document, minlength=n_documents)[:, np.newaxis]


def pooled_outputs(task: str, logits: np.ndarray, document: np.ndarray, n_documents: int,
                   how: str = "mean") -> np.ndarray:
    """The task's outputs per document (probabilities, or scores [n, 1]) from its windows' logits."""
    from tfbert.tasks import activate

    return activate(task, pool(window_scores(task, logits), document, n_documents, how))


def graph_pooled_logits(task: str, logits, document, n_documents, how: str = "mean"):
    """:func:`pool` of :func:`window_scores` in TensorFlow ops (float32 ``logits`` [windows, outputs], int
    ``document`` [windows]): per-document logits for the export's outputs (softmax, sigmoid or scores)."""
    import tensorflow as tf

    scores = tf.nn.log_softmax(logits, axis=-1) if task == "single_label" else logits
    segments = tf.cast(document, tf.int32)
    n_documents = tf.cast(n_documents, tf.int32)
    if how == "max":
        return tf.math.unsorted_segment_max(scores, segments, n_documents)
    return tf.math.unsorted_segment_mean(scores, segments, n_documents)


def window_signatures(module, task: str, stride: int, window_pool: str, text_in: bool, text_pairs: bool) -> dict:
    """A windowed model's signatures: ``predict_windows`` (tokenised windows and their text index in, one answer
    per text out) and, with in-graph tokenisation, ``serving_default`` and (with ``text_pairs``)
    ``predict_text_pair`` (raw text in, windows made in the graph). ``module`` is tfbert.export's classifier
    module (its ``logits``, ``outputs`` and ``encoder``)."""
    import tensorflow as tf

    from tfbert.length_groups import in_length_groups

    ids_spec = tf.TensorSpec([None, None], tf.int64)

    def per_text(window_logits, document, texts):
        """The outputs of each of ``texts`` texts, pooled from its windows' logits."""
        return module.outputs(graph_pooled_logits(task, tf.cast(window_logits, tf.float32), document, texts,
                                                  window_pool))

    @tf.function(input_signature=[ids_spec, ids_spec, ids_spec, tf.TensorSpec([None], tf.int64)])
    def predict_windows(input_ids, attention_mask, token_type_ids, window_document):
        texts = tf.reduce_max(tf.concat([[-1], window_document], axis=0)) + 1  # 0 for no windows
        return per_text(module.logits(input_ids, attention_mask, token_type_ids), window_document, texts)

    def answer(text, text_pair):
        input_ids, attention_mask, token_type_ids, document = module.encoder.encode_windows(text, stride, text_pair)
        return per_text(in_length_groups(module.logits, input_ids, attention_mask, token_type_ids), document,
                        tf.size(text))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve_text(text):
        return answer(text, None)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text"),
                                  tf.TensorSpec([None], tf.string, name="text_pair")])
    def serve_text_pair(text, text_pair):
        return answer(text, text_pair)

    signatures = {"predict_windows": predict_windows.get_concrete_function()}
    if text_in:
        signatures["serving_default"] = serve_text.get_concrete_function()
        if text_pairs:
            signatures["predict_text_pair"] = serve_text_pair.get_concrete_function()
    return signatures
