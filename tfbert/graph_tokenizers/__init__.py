"""In-graph tokenisation for exports: a tf.Module that tokenises raw text exactly as the Hugging Face tokenizer.

    common.py         character classes, Unicode tables, shared refusals, the framed encoder (truncation, specials)
    wordpiece.py      fast BERT-family tokenizers (TF Text WordPiece)
    sentencepiece.py  slow XLM-R, CamemBERT, ALBERT tokenizers (TF Text SentencepieceTokenizer)

This package's door picks the copy for a tokenizer, or says why it has none.

Example:
    >>> in_graph_tokenization(tokenizer, "head")  # doctest: +SKIP
    (True, "TF Text WordPiece with the tokenizer's own normaliser settings")
    >>> ids, mask, types = text_encoder(tokenizer, 128).encode(tf.constant(["Héllo world"]))  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from tfbert.errors import TfbertError
from tfbert.graph_tokenizers.common import TRUNCATIONS, common_refusal, frame_template
from tfbert.graph_tokenizers.sentencepiece import is_sentencepiece, sentencepiece_encoder, sentencepiece_spec
from tfbert.graph_tokenizers.wordpiece import wordpiece_encoder, wordpiece_spec


def _graph_spec(tokenizer) -> tuple[Optional[dict], str]:
    """The in-graph tokenizer settings for ``tokenizer`` (WordPiece or SentencePiece), or None and why not."""
    refusal = common_refusal(tokenizer)
    if refusal:
        return None, refusal
    spec, reason = sentencepiece_spec(tokenizer) if is_sentencepiece(tokenizer) else wordpiece_spec(tokenizer)
    if spec is not None:
        spec["template"] = frame_template(tokenizer)
        # Pair truncation "longest_first" differs: tokenizers (Rust) for fast tokenizers, transformers (Python) else.
        spec["longest_first"] = "rust" if getattr(tokenizer, "is_fast", False) else "python"
        spec["pad"] = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return spec, reason


def in_graph_tokenization(tokenizer, truncation: str) -> tuple[bool, str]:
    """Whether serving_default can tokenise exactly like ``tokenizer``, and why not if not.

    Example:
        >>> in_graph_tokenization(tokenizer, "head")  # doctest: +SKIP
        (True, "TF Text WordPiece with the tokenizer's own normaliser settings")
    """
    if truncation not in TRUNCATIONS:
        return False, f"truncation {truncation!r} is not one of {TRUNCATIONS}"
    spec, reason = _graph_spec(tokenizer)
    if spec is None:
        return False, f"{reason}; the export has predict_ids only (tokenise with the tokenizer it ships)"
    return True, reason


def text_encoder(tokenizer, max_length: int, truncation: str = "head", workdir: str | Path | None = None):
    """An in-graph copy of ``tokenizer`` (a tf.Module with ``encode(texts, pairs=None)``), or a TfbertError.

    WordPiece (fast BERT-family) and SentencePiece (slow XLM-R, CamemBERT, ALBERT) tokenizers have one.
    ``workdir`` holds the vocab.txt a WordPiece lookup table reads (a fresh temporary folder if None).

    Example:
        >>> ids, mask, types = text_encoder(tokenizer, 128).encode(tf.constant(["Héllo world"]))  # doctest: +SKIP
    """
    spec, reason = _graph_spec(tokenizer)
    if spec is None:
        raise TfbertError(f"tokenizer {type(tokenizer).__name__}: {reason}")
    if truncation not in TRUNCATIONS:
        raise TfbertError(f"--truncation {truncation}: choose one of {', '.join(TRUNCATIONS)}")
    if spec["kind"] == "sentencepiece":
        return sentencepiece_encoder(spec, max_length, truncation)
    return wordpiece_encoder(spec, max_length, truncation, workdir)
