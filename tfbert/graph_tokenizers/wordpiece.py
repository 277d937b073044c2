"""The in-graph copy of fast BERT-family tokenizers (BERT, DistilBERT, ELECTRA, MiniLM, ...) for SavedModel export.

BertNormalizer, BertPreTokenizer and WordPiece in TF Text ops (RegexSplitWithOffsets, WordpieceTokenizeWithOffsets),
with the character classes and case/accent tables read from the installed tokenizers library.

Example:
    >>> spec, why = wordpiece_spec(tokenizer)  # doctest: +SKIP
    >>> ids, mask, types = wordpiece_encoder(spec, 128, "head").encode(tf.constant(["Héllo"]))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Optional

from tfbert.graph_tokenizers.common import CJK_RANGES, UNMAPPED, bert_unicode_tables, char_class, framed_encoder_class


def wordpiece_spec(tokenizer) -> tuple[Optional[dict], str]:
    """The settings of an in-graph copy of ``tokenizer``, or None and the reason it has none.

    Only fast tokenizers built from BertNormalizer + BertPreTokenizer + WordPiece (BERT, DistilBERT,
    ELECTRA, MiniLM, ...) with [CLS] A [SEP] (B [SEP]) templates qualify; everything they do is mirrored.

    Example:
        >>> spec, why = wordpiece_spec(tokenizer)  # doctest: +SKIP
        >>> spec["lowercase"], why  # doctest: +SKIP
        (True, 'TF Text WordPiece with the tokenizer's own normaliser settings')
    """
    name = type(tokenizer).__name__
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if name == "BertJapaneseTokenizer":
        return None, f"{name} splits words with MeCab or its own rules, which TF Text cannot run"
    if backend is None:
        return None, f"{name} is a slow (Python) tokenizer; only fast BERT tokenizers have an exact TF Text copy"
    state = json.loads(backend.to_str())
    normalizer, pre, model = state.get("normalizer") or {}, state.get("pre_tokenizer") or {}, state.get("model") or {}
    if normalizer.get("type") != "BertNormalizer" or pre.get("type") != "BertPreTokenizer" \
            or model.get("type") != "WordPiece":
        kinds = f"{normalizer.get('type')}/{pre.get('type')}/{model.get('type')}"
        return None, f"{name} ({kinds}) has no exact TF Text equivalent"
    added = state.get("added_tokens") or []
    awkward = [t["content"] for t in added if t.get("normalized") or t.get("lstrip") or t.get("rstrip")
               or t.get("single_word") or re.search(r"\s", t["content"])]
    if awkward:
        return None, f"added tokens {awkward[:3]} are matched in ways TF Text cannot copy"
    ids = dict(model["vocab"])
    ids.update({t["content"]: t["id"] for t in added})
    vocab = [None] * (max(ids.values()) + 1)
    for token, index in ids.items():
        vocab[index] = token
    if any(token is None or "\n" in token or "\r" in token for token in vocab):
        return None, "the vocabulary has gaps or line breaks in tokens, so it cannot be a vocab.txt"
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    if cls is None or sep is None or tokenizer.build_inputs_with_special_tokens([7], [8]) != [cls, 7, sep, 8, sep] \
            or tokenizer.create_token_type_ids_from_sequences([7], [8]) != [0, 0, 0, 1, 1]:
        return None, f"{name} does not frame inputs as [CLS] A [SEP] B [SEP]"
    lowercase = bool(normalizer.get("lowercase", True))
    strip = normalizer.get("strip_accents")
    spec = {
        "vocab": vocab,
        "unk_token": model.get("unk_token", "[UNK]"),
        "prefix": model.get("continuing_subword_prefix", "##"),
        "max_chars_per_word": int(model.get("max_input_chars_per_word", 100)),
        "clean_text": bool(normalizer.get("clean_text", True)),
        "chinese_chars": bool(normalizer.get("handle_chinese_chars", True)),
        "strip_accents": lowercase if strip is None else bool(strip),
        "lowercase": lowercase,
        "added_tokens": {t["content"]: t["id"] for t in added},
        "kind": "wordpiece",
    }
    if spec["unk_token"] not in ids:
        return None, f"the unknown token {spec['unk_token']!r} is not in the vocabulary"
    return spec, "TF Text WordPiece with the tokenizer's own normaliser settings"


def _wordpiece_encoder_class():
    import tensorflow as tf
    import tensorflow_text as text

    class WordPieceEncoder(framed_encoder_class()):
        """BERT's normaliser, pre-tokenizer and WordPiece in TF Text ops, as the fast BERT tokenizer."""

        def __init__(self, spec: dict, tables: dict, vocab_file: str, max_length: int, truncation: str):
            super().__init__()
            self.spec, self.tables, self.max_length, self.truncation = spec, tables, max_length, truncation
            # A file path: TF Text builds a TextFileInitializer table, which the SavedModel keeps as an asset.
            # Words are capped by characters (below), so the byte cap only has to let every such word through.
            self.wordpiece = text.WordpieceTokenizer(
                vocab_file, suffix_indicator=spec["prefix"], max_bytes_per_word=4 * spec["max_chars_per_word"] + 4,
                token_out_type=tf.int64, unknown_token=spec["unk_token"])
            added = sorted(spec["added_tokens"], key=len, reverse=True)  # leftmost-longest, as tokenizers matches
            self.added_pattern = "|".join(re.escape(token) for token in added)
            self.added_tokens = tf.constant(added or [""])
            self.added_ids = tf.constant([spec["added_tokens"][t] for t in added] or [0], tf.int64)
            self.char_map = None
            if tables["char_map"]:  # accent stripping and lower-casing, one character at a time as tokenizers does
                keys, values = zip(*sorted(tables["char_map"].items()))
                self.char_map = tf.lookup.StaticHashTable(
                    tf.lookup.KeyValueTensorInitializer(tf.constant(keys), tf.constant(values)), UNMAPPED)
            keep = [p for p in (tables["punctuation"], char_class(c for a, b in CJK_RANGES for c in range(a, b + 1))
                                if spec["chinese_chars"] else "") if p]
            self.keep_pattern = "|".join(keep)
            self.split_pattern = "|".join(([tables["split_spaces"] + "+"] if tables["split_spaces"] else []) + keep)

        def _normalize(self, texts):
            """BertNormalizer: clean text (drop controls, unify spaces), strip accents, lower-case."""
            if self.tables["removed"]:
                texts = tf.strings.regex_replace(texts, self.tables["removed"], "")
            if self.tables["spaces"]:
                texts = tf.strings.regex_replace(texts, self.tables["spaces"], " ")
            if self.char_map is not None:
                chars = tf.strings.unicode_split(texts, "UTF-8")
                mapped = self.char_map.lookup(chars.flat_values)
                mapped = tf.where(tf.equal(mapped, UNMAPPED), chars.flat_values, mapped)
                texts = tf.strings.reduce_join(chars.with_flat_values(mapped), axis=-1)
            return texts

        def _pieces_of_segments(self, segments):
            """Word piece ids [segments, pieces] of plain text segments (no added tokens inside)."""
            words = text.regex_split(self._normalize(segments), self.split_pattern, self.keep_pattern)
            too_long = tf.strings.length(words.flat_values, unit="UTF8_CHAR") > self.spec["max_chars_per_word"]
            words = words.with_flat_values(tf.where(too_long, self.spec["unk_token"], words.flat_values))
            return self.wordpiece.tokenize(words).merge_dims(-2, -1)

        def pieces(self, texts):
            """Word piece ids [batch, pieces] of raw texts, without [CLS]/[SEP]."""
            if not self.added_pattern:
                return self._pieces_of_segments(texts)
            # Added tokens ([CLS], [SEP], ...) are found in the raw text first and never normalised.
            # RegexSplit stops at a NUL byte; U+FFFD stands in for it (clean_text drops both).
            if self.spec["clean_text"]:
                texts = tf.strings.regex_replace(texts, r"\x00", "\ufffd")
            segments = text.regex_split(texts, self.added_pattern, self.added_pattern)
            flat = segments.flat_values
            matches = tf.equal(flat[:, tf.newaxis], self.added_tokens[tf.newaxis, :])
            is_added = tf.reduce_any(matches, axis=1)
            plain = self._pieces_of_segments(flat)
            plain = tf.ragged.boolean_mask(plain, tf.ones_like(plain, tf.bool) & ~is_added[:, tf.newaxis])
            added_ids = tf.boolean_mask(tf.gather(self.added_ids, tf.argmax(tf.cast(matches, tf.int32), axis=1)),
                                        is_added)
            added = tf.RaggedTensor.from_row_lengths(added_ids, tf.cast(is_added, tf.int64))
            per_segment = tf.concat([plain, added], axis=1)  # each row is one or the other
            return segments.with_flat_values(per_segment).merge_dims(-2, -1)

    return WordPieceEncoder


def wordpiece_encoder(spec: dict, max_length: int, truncation: str, workdir: str | Path | None = None):
    """The in-graph tokenizer (a tf.Module with ``encode(texts, pairs=None)``) for a :func:`wordpiece_spec` with
    the framing added (``template``, ``longest_first``, ``pad``: :func:`tfbert.graph_tokenizers.text_encoder`
    adds them and calls this).

    ``workdir`` holds the vocab.txt the WordPiece lookup table reads (a fresh temporary folder if None).

    Example:
        >>> encoder = text_encoder(tokenizer, 128, "head")  # doctest: +SKIP
    """
    folder = Path(workdir or tempfile.mkdtemp(prefix="tfbert-vocab-"))
    folder.mkdir(parents=True, exist_ok=True)
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("".join(token + "\n" for token in spec["vocab"]), encoding="utf-8")
    tables = bert_unicode_tables(spec["clean_text"], spec["strip_accents"], spec["lowercase"])
    return _wordpiece_encoder_class()(spec, tables, str(vocab_file), max_length, truncation)
