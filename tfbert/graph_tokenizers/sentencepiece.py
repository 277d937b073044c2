"""In-graph copies of the slow SentencePiece tokenizers (XLM-RoBERTa, CamemBERT, ALBERT) for SavedModel export.

TF Text's SentencepieceTokenizer runs the tokenizer's own SentencePiece model; everything transformers does
around it is mirrored in TF ops, with the character tables read from this Python (the one the tokenizer runs in):

  1. ALBERT-style ``do_lower_case``: every character outside special tokens lower-cased one at a time.
  2. Added tokens (<s>, [CLS], <mask>, ...) split off first, as transformers' Trie does (leftmost longest), and
     their lstrip/rstrip applied to the neighbouring text.
  3. ALBERT's preprocess_text: whitespace runs to one space, `` and '' to ", NFKD without combining marks,
     str.lower() (with its final-sigma rule).
  4. SentencePiece, pieces as strings; ALBERT's re-split of pieces ending in a digit and a comma.
  5. Piece to id as the tokenizer converts it (added tokens first, then the fairseq offsets of XLM-R/CamemBERT).

The fast tokenizers of these models are the tokenizers library's re-implementation of SentencePiece, which
tokenises some texts differently (whitespace, unknown characters, the ALBERT comma rule); they get no in-graph
copy, so an export never tokenises differently from training (tfbert loads the slow ones, see tfbert.tokenizers).

Example:
    >>> spec, why = sentencepiece_spec(XLMRobertaTokenizer("sentencepiece.bpe.model"))  # doctest: +SKIP
    >>> spec["kind"], spec["preprocess"]  # doctest: +SKIP
    ('sentencepiece', None)
"""

from __future__ import annotations

import unicodedata
from typing import Optional

from tfbert.graph_tokenizers.common import CASE_IGNORABLE, CASED, UNMAPPED, framed_encoder_class, python_text_tables
# The slow tokenizer classes whose tokenisation is SentencePiece plus the steps above, and their model file.
from tfbert.tokenizers import SENTENCEPIECE_SLOW as SENTENCEPIECE_TOKENIZERS

WORD_START = "\u2581"  # SentencePiece's "▁"
# NUL marks where special tokens are cut out of the text (tf.strings.split on it; TF Text's RegexSplit would stop
# at a NUL), so the text's own NUL and \x01 travel escaped as \x01\x02 and \x01\x03 until SentencePiece reads
# it: no character table, pattern or (checked) added token touches those control characters.
ESCAPES = (("\x01", "\x01\x03"), ("\x00", "\x01\x02"))
BOUNDARY = "\x00"


def is_sentencepiece(tokenizer) -> bool:
    """Whether ``tokenizer`` is of a SentencePiece family tfbert knows (slow or fast)."""
    return type(tokenizer).__name__.removesuffix("Fast") in SENTENCEPIECE_TOKENIZERS


def _re2_literal(token: str) -> str:
    """An RE2 pattern matching exactly ``token``."""
    return "".join(c if c.isascii() and c.isalnum() else f"\\x{{{ord(c):X}}}" for c in token)


def _fast_refusal(tokenizer) -> str:
    name = type(tokenizer).__name__
    slow = name.removesuffix("Fast")
    if not getattr(tokenizer, "vocab_file", None) or not getattr(tokenizer, "can_save_slow_tokenizer", False):
        return f"{name} is a fast tokenizer without its SentencePiece model file ({SENTENCEPIECE_TOKENIZERS[slow]})"
    return (f"{name} is the tokenizers library's re-implementation of SentencePiece, which tokenises some texts "
            f"differently from SentencePiece itself; train with the slow {slow} (tfbert loads it for checkpoints "
            f"with {SENTENCEPIECE_TOKENIZERS[slow]}) to export with in-graph tokenisation")


def _added_token_refusal(tokenizer) -> Optional[str]:
    awkward = [t.content for t in tokenizer.added_tokens_decoder.values()
               if t.single_word or not t.content or any(c.isspace() or unicodedata.category(c) == "Cc"
                                                          for c in t.content)]
    if awkward:
        return f"added tokens {awkward[:3]} are matched in ways the in-graph copy does not reproduce"
    if tokenizer.split_special_tokens:
        return "split_special_tokens=True (special tokens in text are tokenised as text)"
    return None


def _id_map(tokenizer) -> Optional[list[int]]:
    """The tokenizer's id of each SentencePiece id (fairseq offsets), or None if unknown pieces disagree."""
    sp = tokenizer.sp_model
    ids = [tokenizer._convert_token_to_id(sp.IdToPiece(i)) for i in range(sp.GetPieceSize())]
    unknown_surface = "\U0010fffd\U0010fffc"  # SentencePiece returns unknown text as its own piece
    if sp.PieceToId(unknown_surface) != sp.unk_id() or \
            tokenizer._convert_token_to_id(unknown_surface) != ids[sp.unk_id()]:
        return None
    return ids


def sentencepiece_spec(tokenizer) -> tuple[Optional[dict], str]:
    """The settings of an in-graph copy of a slow SentencePiece ``tokenizer``, or None and the reason it has none.

    Example:
        >>> spec, why = sentencepiece_spec(AlbertTokenizer("spiece.model"))  # doctest: +SKIP
        >>> spec["preprocess"]  # doctest: +SKIP
        {'remove_space': True, 'keep_accents': False, 'do_lower_case': True}
    """
    import transformers

    name = type(tokenizer).__name__
    if getattr(tokenizer, "is_fast", False):
        return None, _fast_refusal(tokenizer)
    if type(tokenizer) is not getattr(transformers, name, None) or name not in SENTENCEPIECE_TOKENIZERS:
        return None, f"{name} is not one of {sorted(SENTENCEPIECE_TOKENIZERS)}, whose steps the in-graph copy mirrors"
    if tokenizer.sp_model_kwargs:
        return None, f"sp_model_kwargs {tokenizer.sp_model_kwargs} (sampling or other SentencePiece options)"
    refusal = _added_token_refusal(tokenizer)
    if refusal:
        return None, refusal
    id_map = _id_map(tokenizer)
    if id_map is None:
        return None, f"{name} maps unknown pieces to an id other than its unknown token's"
    added = tokenizer.added_tokens_decoder
    lower_outside_specials = bool(getattr(tokenizer, "do_lower_case", False))  # as PreTrainedTokenizer.tokenize
    spec = {
        "kind": "sentencepiece",
        "model": tokenizer.sp_model.serialized_model_proto(),
        "id_map": id_map,
        "added_tokens": {t.content: i for i, t in added.items()},
        "lstrip": sorted(t.content for t in added.values() if t.lstrip),
        "rstrip": sorted(t.content for t in added.values() if t.rstrip),
        "lower_outside_specials": lower_outside_specials,
        # tokenize() keeps these as they are when lower-casing, trying them in this order at each position.
        "protected": list(tokenizer.all_special_tokens) + [t.content for t in added.values()
                                                           if not t.special and t.normalized],
        "preprocess": None,
        "split_number_commas": name == "AlbertTokenizer",
    }
    if name == "AlbertTokenizer":
        spec["preprocess"] = {option: bool(getattr(tokenizer, option))
                              for option in ("remove_space", "keep_accents", "do_lower_case")}
    return spec, "TF Text SentencepieceTokenizer with the tokenizer's model, special tokens and preprocessing"


def _sentencepiece_encoder_class():
    import tensorflow as tf
    import tensorflow_text as text

    def string_table(mapping: dict):
        keys, values = zip(*sorted(mapping.items())) if mapping else ((UNMAPPED + "x",), (UNMAPPED,))
        return tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(tf.constant(keys), tf.constant(values)),
                                         UNMAPPED)

    def int_table(mapping: dict, default: int):
        keys, values = zip(*sorted(mapping.items())) if mapping else ((UNMAPPED,), (default,))
        return tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
            tf.constant(keys), tf.constant(values, tf.int64)), default)

    def alternation(tokens: list[str]) -> str:
        return "(" + "|".join(_re2_literal(t) for t in tokens) + ")" if tokens else ""

    def ragged_positions(ragged):
        return tf.ragged.range(ragged.row_lengths()).flat_values

    class SentencePieceEncoder(framed_encoder_class()):
        """A slow SentencePiece tokenizer (XLM-R, CamemBERT, ALBERT) with its pre- and post-processing in TF ops."""

        def __init__(self, spec: dict, tables: dict, max_length: int, truncation: str):
            super().__init__()
            self.spec, self.max_length, self.truncation = spec, max_length, truncation
            self.whitespace, self.digits = tables["whitespace"], tables["digits"]
            self.sentencepiece = text.SentencepieceTokenizer(spec["model"], out_type=tf.string)
            self.id_map = tf.constant(spec["id_map"], tf.int64)
            self.added_ids = int_table(spec["added_tokens"], -1)
            # Leftmost longest, as transformers' Trie.split; RE2 alternation is leftmost-first.
            self.added_pattern = alternation(sorted(spec["added_tokens"], key=len, reverse=True))
            self.protected_pattern = alternation(spec["protected"])
            flags = {t: (1 if t in spec["lstrip"] else 0) + (2 if t in spec["rstrip"] else 0)
                     for t in set(spec["lstrip"]) | set(spec["rstrip"])}
            self.strip_flags = int_table(flags, 0)
            self.lower = string_table(tables["lower"])
            self.nfkd_strip = string_table(tables["nfkd_strip"])
            self.sigma_kinds = int_table(tables["sigma"], 0)

        @staticmethod
        def _escape(texts, reverse: bool = False):
            for raw, escaped in (reversed(ESCAPES) if reverse else ESCAPES):
                texts = tf.strings.regex_replace(texts, _re2_literal(escaped if reverse else raw),
                                                 raw if reverse else escaped)
            return texts

        def _map_chars(self, texts, table, final_sigma: bool = False):
            """Each character replaced by its entry in ``table``; with ``final_sigma``, Σ as str.lower() has it."""
            chars = tf.strings.unicode_split(texts, "UTF-8")
            flat = chars.flat_values
            mapped = table.lookup(flat)
            mapped = tf.where(tf.equal(mapped, UNMAPPED), flat, mapped)
            if final_sigma:
                mapped = tf.where(self._final_sigmas(chars), "ς", mapped)
            return tf.strings.reduce_join(chars.with_flat_values(mapped), axis=-1)

        def _final_sigmas(self, chars):
            """Where Σ follows a cased character and precedes none (case-ignorable characters skipped)."""
            flat = chars.flat_values
            kinds = self.sigma_kinds.lookup(flat)
            anchors = tf.not_equal(kinds, CASE_IGNORABLE)
            total = tf.size(flat, out_type=tf.int64)
            # Flat index of every non-ignorable character, then a sentinel so lookups past the end stay in range.
            anchor_at = tf.concat([tf.where(anchors)[:, 0], [total]], axis=0)
            kinds = tf.concat([kinds, tf.zeros([1], tf.int64)], axis=0)
            before = tf.cumsum(tf.cast(anchors, tf.int64), exclusive=True)
            row_start = tf.gather(chars.row_starts(), chars.value_rowids())
            row_limit = tf.gather(chars.row_limits(), chars.value_rowids())
            previous = tf.gather(anchor_at, tf.maximum(before - 1, 0))
            cased_before = (before > 0) & (previous >= row_start) & tf.equal(tf.gather(kinds, previous), CASED)
            following = tf.gather(anchor_at, before + tf.cast(anchors, tf.int64))
            cased_after = (following < row_limit) & tf.equal(tf.gather(kinds, following), CASED)
            return tf.equal(flat, "Σ") & cased_before & ~cased_after

        def _split_on(self, texts, pattern):
            """Texts cut around every match of ``pattern``: ragged [batch, 2k+1], matches at odd positions."""
            if not pattern:
                return tf.RaggedTensor.from_tensor(texts[:, tf.newaxis])
            return tf.strings.split(tf.strings.regex_replace(texts, pattern, BOUNDARY + "\\1" + BOUNDARY), BOUNDARY)

        def _lower_outside_specials(self, texts):
            """PreTrainedTokenizer.tokenize's do_lower_case: one character at a time, special tokens kept."""
            parts = self._split_on(texts, self.protected_pattern)
            protected = tf.equal(ragged_positions(parts) % 2, 1)
            lowered = tf.where(protected, parts.flat_values, self._map_chars(parts.flat_values, self.lower))
            return tf.strings.reduce_join(parts.with_flat_values(lowered), axis=-1)

        def _strip_beside_added(self, flat):
            """Whitespace eaten by added tokens with lstrip (text before them) or rstrip (text after them)."""
            flags = self.strip_flags.lookup(flat)
            size = tf.size(flags)
            none = tf.zeros([1], tf.int64)
            after = tf.concat([flags[1:], none], axis=0)[:size]  # the neighbours of plain text are added tokens
            before = tf.concat([none, flags[:-1]], axis=0)[:size]
            ws = self.whitespace
            flat = tf.where(tf.bitwise.bitwise_and(after, 1) > 0, tf.strings.regex_replace(flat, ws + "+$", ""), flat)
            return tf.where(tf.bitwise.bitwise_and(before, 2) > 0, tf.strings.regex_replace(flat, "^" + ws + "+", ""),
                            flat)

        def _preprocess(self, flat):
            """AlbertTokenizer.preprocess_text."""
            options = self.spec["preprocess"]
            if options["remove_space"]:
                flat = tf.strings.regex_replace(tf.strings.regex_replace(flat, self.whitespace + "+", " "), "^ | $", "")
            flat = tf.strings.regex_replace(tf.strings.regex_replace(flat, "``", '"'), "''", '"')
            if not options["keep_accents"]:
                flat = self._map_chars(flat, self.nfkd_strip)
            if options["do_lower_case"]:
                flat = self._map_chars(flat, self.lower, final_sigma=True)
            return flat

        def _split_number_commas(self, pieces):
            """AlbertTokenizer._tokenize: a piece ending in digit + "," is re-encoded without the comma."""
            flat = pieces.flat_values
            fix = tf.strings.regex_full_match(flat, "(?s).*" + self.digits + ",")
            targets = tf.boolean_mask(flat, fix)
            body = tf.strings.regex_replace(tf.strings.regex_replace(targets, ",$", ""), WORD_START, "")
            sub = self.sentencepiece.tokenize(body)
            # A piece that did not start a word loses the word start its digits get when encoded alone.
            values = sub.flat_values
            unmark = (tf.equal(ragged_positions(sub), 0) & tf.strings.regex_full_match(values, f"(?s){WORD_START}.*")
                      & ~tf.gather(tf.strings.regex_full_match(targets, f"(?s){WORD_START}.*"), sub.value_rowids()))
            values = tf.where(unmark, tf.strings.regex_replace(values, "^" + WORD_START, ""), values)
            sub = tf.ragged.boolean_mask(sub.with_flat_values(values), sub.with_flat_values(tf.not_equal(values, "")))
            sub = tf.concat([sub, tf.RaggedTensor.from_tensor(tf.fill(tf.stack([sub.nrows(), 1]), ","))], axis=1)
            singles = tf.RaggedTensor.from_row_lengths(tf.boolean_mask(flat, ~fix),
                                                       tf.ones_like(tf.boolean_mask(flat, ~fix), tf.int64))
            order = tf.where(fix, singles.nrows() + tf.cumsum(tf.cast(fix, tf.int64), exclusive=True),
                             tf.cumsum(tf.cast(~fix, tf.int64), exclusive=True))
            replaced = tf.gather(tf.concat([singles, sub], axis=0), order)
            return pieces.with_flat_values(replaced).merge_dims(1, 2)

        def _piece_ids(self, pieces):
            """_convert_token_to_id_with_added_voc: an added token's id, else the SentencePiece id mapped."""
            flat = pieces.flat_values
            added = self.added_ids.lookup(flat)
            spm_ids = tf.cast(self.sentencepiece.string_to_id(flat), tf.int64)
            return pieces.with_flat_values(tf.where(added >= 0, added, tf.gather(self.id_map, spm_ids)))

        def pieces(self, texts):
            """Token ids [batch, pieces] of raw texts, without special tokens around them."""
            texts = self._escape(texts)
            if self.spec["lower_outside_specials"]:
                texts = self._lower_outside_specials(texts)
            segments = self._split_on(texts, self.added_pattern)
            flat = segments.flat_values
            is_added = tf.equal(ragged_positions(segments) % 2, 1)
            added_ids = self.added_ids.lookup(flat)
            flat = self._strip_beside_added(flat)
            if self.spec["preprocess"]:
                flat = self._preprocess(flat)
            pieces = self.sentencepiece.tokenize(self._escape(flat, reverse=True))
            if self.spec["split_number_commas"]:
                pieces = self._split_number_commas(pieces)
            plain = self._piece_ids(pieces)
            plain = tf.ragged.boolean_mask(plain, tf.ones_like(plain, tf.bool) & ~is_added[:, tf.newaxis])
            added = tf.RaggedTensor.from_row_lengths(tf.boolean_mask(added_ids, is_added), tf.cast(is_added, tf.int64))
            per_segment = tf.concat([plain, added], axis=1)  # each row is one or the other
            return segments.with_flat_values(per_segment).merge_dims(1, 2)

    return SentencePieceEncoder


def sentencepiece_encoder(spec: dict, max_length: int, truncation: str):
    """The in-graph tokenizer (a tf.Module with ``encode(texts, pairs=None)``) for a :func:`sentencepiece_spec` with
    the framing added (``template``, ``longest_first``, ``pad``: :func:`tfbert.graph_tokenizers.text_encoder`
    adds them and calls this).

    Example:
        >>> encoder = text_encoder(XLMRobertaTokenizer("sentencepiece.bpe.model"), 128)  # doctest: +SKIP
    """
    return _sentencepiece_encoder_class()(spec, python_text_tables(), max_length, truncation)
