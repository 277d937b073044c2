"""What every in-graph tokenizer of an export shares: RE2 character classes, the Unicode tables read from the
libraries the Hugging Face tokenizers run in, the refusals that hold whatever the tokenizer's kind, and the framed
encoder (truncation and special tokens around the pieces, as the Hugging Face tokenizer does them).

Example:
    >>> char_class([0x41, 0x42, 0x43, 0x5F]) == r"[\\x{41}-\\x{43}\\x{5F}]"
    True
    >>> frame_template(bert_tokenizer)["pair"]  # doctest: +SKIP
    [101, -1, 102, -2, 102]
"""

from __future__ import annotations

import functools
import unicodedata
from typing import Optional

TRUNCATIONS = ("head", "tail", "head_tail")

# CJK ideographs stand alone in BERT (tokenizers' is_chinese_char); every other character class below is
# read from the installed tokenizers library itself, so Unicode-version differences between it and
# TF's RE2/ICU tables (new punctuation, marks, case pairs) cannot change a single token.
UNMAPPED = "\uffff"  # lookup default: a noncharacter no normalisation produces
CJK_RANGES = [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
              (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)]
CASED, CASE_IGNORABLE = 1, 2  # what decides the final form of Σ (python_text_tables' "sigma")


def char_class(codepoints) -> str:
    """An RE2 character class matching exactly ``codepoints`` (as ranges); "" for none.

    Example:
        >>> char_class([0x61, 0x62, 0x63]) == r"[\\x{61}-\\x{63}]"
        True
    """
    spans: list[list[int]] = []
    for c in sorted(codepoints):
        if spans and spans[-1][1] == c - 1:
            spans[-1][1] = c
        else:
            spans.append([c, c])
    if not spans:
        return ""
    return "[" + "".join(f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in spans) + "]"


@functools.lru_cache(maxsize=8)
def bert_unicode_tables(clean_text: bool, strip_accents: bool, lowercase: bool) -> dict:
    """How the installed tokenizers' BertNormalizer and BertPreTokenizer treat every code point.

    Returns RE2 classes ``removed`` and ``spaces`` (clean_text), ``split_spaces`` and ``punctuation``
    (the pre-tokenizer; "" for an empty class) and ``char_map``: each character whose accent stripping /
    lower-casing changes it, mapped to its result. Built by running the Hugging Face components on all of
    Unicode (~3 s, cached).

    Example:
        >>> tables = bert_unicode_tables(True, True, True)  # doctest: +SKIP
        >>> tables["char_map"]["É"]  # doctest: +SKIP
        'e'
    """
    from tokenizers import normalizers, pre_tokenizers

    every = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]

    def per_char(normalizer, separator: str) -> list[tuple[int, str]]:
        codes = [c for c in every if chr(c) not in (separator, separator.upper())]
        parts = normalizer.normalize_str(separator.join(map(chr, codes))).split(separator)
        if len(parts) != len(codes):
            raise RuntimeError("tokenizers changed a separator character while building the Unicode tables")
        return list(zip(codes, parts))

    tables = {"removed": "", "spaces": ""}
    if clean_text:
        cleaned = per_char(normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=False,
                                                      strip_accents=False, lowercase=False), "q")
        tables["removed"] = char_class(c for c, out in cleaned if out == "")
        tables["spaces"] = char_class(c for c, out in cleaned if out == " " and c != 0x20)
    joined = "x".join(chr(c) for c in every if c != 0x78)
    covered = bytearray(len(joined))
    punctuation = set()
    for piece, (start, end) in pre_tokenizers.BertPreTokenizer().pre_tokenize_str(joined):
        covered[start:end] = b"\x01" * (end - start)
        if end - start == 1 and piece != "x":
            punctuation.add(ord(piece))
    tables["split_spaces"] = char_class({ord(joined[i]) for i, hit in enumerate(covered) if not hit})
    tables["punctuation"] = char_class(punctuation)
    tables["char_map"] = {}
    if strip_accents or lowercase:
        mapping = normalizers.BertNormalizer(clean_text=False, handle_chinese_chars=False,
                                             strip_accents=strip_accents, lowercase=lowercase)
        tables["char_map"] = {chr(c): out for c, out in per_char(mapping, "\n") if out != chr(c)}
    return tables


def _every_character():
    return (chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)


@functools.lru_cache(maxsize=1)
def python_text_tables() -> dict:
    """How this Python's str methods and unicodedata treat every code point (about a second, cached).

    ``whitespace`` and ``digits``: RE2 classes of str.isspace() / str.isdigit(); ``lower``: each character that
    str.lower() changes, mapped to its result; ``nfkd_strip``: each character that NFKD without combining
    characters changes; ``sigma``: CASED or CASE_IGNORABLE for the characters that decide Σ's final form
    (probed through str.lower() itself, which has no other window on those Unicode properties).

    Example:
        >>> python_text_tables()["nfkd_strip"]["é"]  # doctest: +SKIP
        'e'
    """
    whitespace, digits, lower, nfkd_strip, sigma = [], [], {}, {}, {}
    for c in _every_character():
        if c.isspace():
            whitespace.append(ord(c))
        if c.isdigit():
            digits.append(ord(c))
        if c.lower() != c:
            lower[c] = c.lower()
        stripped = "".join(x for x in unicodedata.normalize("NFKD", c) if not unicodedata.combining(x))
        if stripped != c:
            nfkd_strip[c] = stripped
        # Σ is final after a cased character (case-ignorable ones skipped) unless one follows.
        if (c + "Σ").lower()[-1] == "ς":
            sigma[c] = CASED
        elif ("A" + c + "Σ").lower()[-1] == "ς":
            sigma[c] = CASE_IGNORABLE
    return {"whitespace": char_class(whitespace), "digits": char_class(digits), "lower": lower,
            "nfkd_strip": nfkd_strip, "sigma": sigma}


def frame_template(tokenizer) -> Optional[dict]:
    """How ``tokenizer`` frames one text and a pair with special tokens, or None if not as a fixed template.

    Returns ``single`` and ``pair``: lists of special token ids with -1 (first text) and -2 (second text)
    where the texts go, and ``single_types`` / ``pair_types``: the token type id of each list item.

    Example:
        >>> frame_template(bert_tokenizer)["pair"]  # doctest: +SKIP
        [101, -1, 102, -2, 102]
    """
    try:
        single, pair = (tokenizer.build_inputs_with_special_tokens([-1]),
                        tokenizer.build_inputs_with_special_tokens([-1], [-2]))
        single_types, pair_types = (tokenizer.create_token_type_ids_from_sequences([-1]),
                                    tokenizer.create_token_type_ids_from_sequences([-1], [-2]))
    except Exception:  # a tokenizer that cannot frame placeholder ids has no template we can copy
        return None
    fixed = (single.count(-1) == 1 and -2 not in single and pair.count(-1) == 1 and pair.count(-2) == 1
             and pair.index(-1) < pair.index(-2) and len(single_types) == len(single)
             and len(pair_types) == len(pair) and all(i >= 0 for i in single + pair if i not in (-1, -2))
             and len(single) - 1 == tokenizer.num_special_tokens_to_add(pair=False)
             and len(pair) - 2 == tokenizer.num_special_tokens_to_add(pair=True))
    if not fixed:
        return None
    return {"single": single, "pair": pair, "single_types": single_types, "pair_types": pair_types}


def common_refusal(tokenizer) -> Optional[str]:
    """Why no in-graph copy can match ``tokenizer`` whatever its kind, or None."""
    if getattr(tokenizer, "truncation_side", "right") != "right":
        return f"truncation_side={tokenizer.truncation_side!r} (the in-graph copy cuts texts on the right)"
    if frame_template(tokenizer) is None:
        return f"{type(tokenizer).__name__} does not frame texts with a fixed template of special tokens"
    return None


@functools.lru_cache(maxsize=1)
def framed_encoder_class():
    """The base tf.Module of in-graph tokenizers: truncation and special-token framing, as the HF tokenizer.

    Subclasses set ``self.spec`` (with ``template``, ``longest_first``, ``pad``), ``self.max_length`` and
    ``self.truncation`` and implement ``pieces(texts)``: token ids [batch, pieces] without special tokens.
    """
    import tensorflow as tf

    from tfbert.data.pipeline import HEAD_SHARE

    class FramedEncoder(tf.Module):
        """Texts to padded (input_ids, attention_mask, token_type_ids), as the Hugging Face tokenizer would
        with ``truncation=True, max_length=max_length`` (and tfbert's tail / head_tail truncation)."""

        def _keep(self, pieces, keep):
            """Keep ``keep[i]`` pieces of row i: the head, the tail, or HEAD_SHARE of it head and the rest tail."""
            lengths = pieces.row_lengths()[:, tf.newaxis]
            keep = keep[:, tf.newaxis]
            positions = tf.ragged.range(pieces.row_lengths())
            if self.truncation == "tail":
                mask = positions >= lengths - keep
            elif self.truncation == "head_tail":
                head = tf.cast(tf.floor(tf.cast(keep, tf.float64) * HEAD_SHARE), tf.int64)
                mask = (positions < head) | (positions >= lengths - (keep - head))
            else:
                mask = positions < keep
            return tf.ragged.boolean_mask(pieces, mask)

        def _longest_first(self, first, second, budget):
            """Pieces kept of each text of a pair by the tokenizer's own longest_first truncation."""
            if self.spec["longest_first"] == "rust":  # tokenizers: the shorter keeps up to half the budget
                short = tf.minimum(first, second)
                halves = 2 * short > budget
                keep_short = tf.where(halves, budget // 2, short)
                keep_long = tf.where(halves, budget // 2 + budget % 2, budget - short)
                swap = first > second
                return tf.where(swap, keep_long, keep_short), tf.where(swap, keep_short, keep_long)
            # transformers' truncate_sequences: cut the longer down to the shorter, then split the rest.
            remove = tf.maximum(first + second - budget, 0)
            uneven = tf.minimum(tf.abs(second - first), remove)
            even = remove - uneven
            first_longer = first > second
            remove_first = tf.where(first_longer, uneven + even // 2, even // 2)
            remove_second = tf.where(first_longer, even - even // 2, uneven + even - even // 2)
            return first - remove_first, second - remove_second

        def _pair_budget(self, first, second):
            """Pieces kept of each text of a pair: the tokenizer's longest_first for head, else encode_batch's."""
            budget = tf.constant(self.max_length - (len(self.spec["template"]["pair"]) - 2), tf.int64)
            if self.truncation == "head":
                keep_first, keep_second = self._longest_first(first, second, budget)
            else:
                keep_second = tf.minimum(second, tf.maximum(budget - first, tf.minimum(second, budget // 2)))
                keep_first = budget - keep_second
            fits = first + second <= budget
            return (tf.where(fits, first, tf.minimum(first, keep_first)),
                    tf.where(fits, second, tf.minimum(second, keep_second)))

        def _frame(self, segments, template, types):
            """Special tokens around the segments as ``template`` says (-1, -2: the texts), with token type ids."""
            batch = segments[0].nrows()
            parts, type_parts = [], []
            for item, type_id in zip(template, types):
                if item < 0:
                    part = segments[-item - 1]
                else:
                    part = tf.RaggedTensor.from_tensor(tf.fill(tf.stack([batch, 1]), tf.constant(item, tf.int64)))
                parts.append(part)
                type_parts.append(tf.ones_like(part) * type_id)
            return tf.concat(parts, axis=1), tf.concat(type_parts, axis=1)

        def encode(self, texts, pairs=None):
            """(input_ids, attention_mask, token_type_ids), int64 [batch, longest], padded like the tokenizer."""
            first = self.pieces(texts)
            template = self.spec["template"]
            if pairs is None:
                budget = self.max_length - (len(template["single"]) - 1)
                keep = tf.minimum(first.row_lengths(), tf.constant(budget, tf.int64))
                ids, type_ids = self._frame([self._keep(first, keep)], template["single"], template["single_types"])
            else:
                second = self.pieces(pairs)
                keep_first, keep_second = self._pair_budget(first.row_lengths(), second.row_lengths())
                ids, type_ids = self._frame([self._keep(first, keep_first), self._keep(second, keep_second)],
                                            template["pair"], template["pair_types"])
            return ids.to_tensor(self.spec["pad"]), tf.ones_like(ids).to_tensor(0), type_ids.to_tensor(0)

        def encode_windows(self, texts, stride: int, pairs=None):
            """Every window of each text as tfbert.windows.encode_windows makes them (``stride`` pieces shared with
            the window before; a pair's first text, cut to tfbert.windows.first_text_pieces, in each of its
            windows), framed and padded like :meth:`encode`; and each window's text index, int64 [windows]."""
            from tfbert.windows import first_text_pieces

            template = self.spec["template"]
            if pairs is None:
                budget = self.max_length - (len(template["single"]) - 1)
                read = self.pieces(texts)
                room = tf.fill(tf.shape(read.row_lengths()), tf.constant(budget, tf.int64))
            else:
                budget = self.max_length - (len(template["pair"]) - 2)
                first, read = self.pieces(texts), self.pieces(pairs)
                fits = first.row_lengths() + read.row_lengths() <= budget  # then left whole
                kept = tf.where(fits, first.row_lengths(),
                                tf.minimum(first.row_lengths(), first_text_pieces(budget, stride)))
                first = tf.ragged.boolean_mask(first, tf.ragged.range(first.row_lengths()) < kept[:, tf.newaxis])
                room = budget - kept  # pieces of the second text per window
            lengths, step = read.row_lengths(), room - stride
            counts = 1 + (tf.maximum(lengths - room, 0) + step - 1) // step
            document = tf.repeat(tf.range(tf.size(lengths, out_type=tf.int64)), counts)
            starts = tf.ragged.range(counts).flat_values * tf.gather(step, document)
            stops = tf.minimum(starts + tf.gather(room, document), tf.gather(lengths, document))
            offsets = tf.gather(read.row_starts(), document)
            windows = tf.gather(read.flat_values, tf.ragged.range(offsets + starts, offsets + stops))
            if pairs is None:
                ids, type_ids = self._frame([windows], template["single"], template["single_types"])
            else:
                ids, type_ids = self._frame([tf.gather(first, document), windows], template["pair"],
                                            template["pair_types"])
            return ids.to_tensor(self.spec["pad"]), tf.ones_like(ids).to_tensor(0), type_ids.to_tensor(0), document

    return FramedEncoder

