"""A saved tokenizer run by the `tokenizers` library alone, for predictors that start in a blink.

Importing transformers costs seconds; the compact export's predictor tokenises with the tokenizer.json
that save_pretrained wrote beside it, through `tokenizers` (what transformers' fast tokenizers run
inside), and gives the same ids as the tokenizer training used (tfbert.data.pipeline.encode_batch),
truncation included. Only where that is known to hold does :func:`load_light_tokenizer` return one;
otherwise it says why, and the caller falls back to transformers (slow SentencePiece tokenizers,
Japanese word splitters, tokenizer classes whose Python side adds to the backend's work).

Example:
    >>> tokenizer, why = load_light_tokenizer("output/run/compact/tokenizer", max_length=128)  # doctest: +SKIP
    >>> tokenizer.encode(["great value"])["input_ids"]  # doctest: +SKIP
    [[101, 2307, 3643, 102]]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

HEAD_SHARE = 0.25  # head+tail keeps a quarter head, three quarters tail (Sun et al. 2019, "How to Fine-Tune BERT")

# WordPiece classes whose fast tokenizer is its backend plus [CLS] a [SEP] (b [SEP]) with token types 0/1, in
# transformers' Python (build_inputs_with_special_tokens) as in the backend's post-processor.
EXACT_CLASSES = ("BertTokenizer", "DistilBertTokenizer", "ElectraTokenizer")


def truncate_ids(ids: list[int], budget: int, mode: str) -> list[int]:
    """``ids`` cut to ``budget`` tokens: head keeps the start, tail the end, head_tail a quarter start + the end.

    Example:
        >>> truncate_ids([1, 2, 3, 4, 5, 6, 7, 8], 4, "head_tail")
        [1, 6, 7, 8]
    """
    if len(ids) <= budget:
        return ids
    if mode == "tail":
        return ids[len(ids) - budget:]
    if mode == "head_tail":
        head = int(budget * HEAD_SHARE)
        return ids[:head] + ids[len(ids) - (budget - head):]
    return ids[:budget]


def pair_budget(len_a: int, len_b: int, budget: int) -> int:
    """Tokens the second text keeps when a pair shares ``budget``: the longer text is shortened first, as the
    tokenizers' longest_first strategy does.

    Example:
        >>> pair_budget(3, 20, 10)
        7
    """
    return max(budget - len_a, min(len_b, budget // 2))


def _token(config: dict, name: str) -> Optional[str]:
    value = config.get(name)
    return value.get("content") if isinstance(value, dict) else value


class LightTokenizer:
    """Token ids and padded batches from a tokenizer.json, as transformers' fast tokenizer gives them.

    Example:
        >>> tokenizer, _ = load_light_tokenizer("output/run/compact/tokenizer", max_length=32)  # doctest: +SKIP
        >>> tokenizer.pad(tokenizer.encode(["a", "a b c"]))["attention_mask"]  # doctest: +SKIP
        array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=int32)
    """

    def __init__(self, backend, *, max_length: int, truncation: str, direction: str, cls_id: int, sep_id: int,
                 pad_id: int, stride: Optional[int] = None):
        self.backend, self.max_length, self.truncation = backend, max_length, truncation
        self.cls_id, self.sep_id, self.pad_id = cls_id, sep_id, pad_id
        self.stride = stride
        backend.no_padding()
        if truncation == "head" and stride is None:  # what transformers sets for truncation=True, max_length=...
            backend.enable_truncation(max_length, stride=0, strategy="longest_first", direction=direction)
        else:  # the plain ids are cut (tail, head_tail) or read in windows here, as encode_batch does
            backend.no_truncation()

    def build_inputs_with_special_tokens(self, a: list[int], b: Optional[list[int]] = None) -> list[int]:
        """[CLS] a [SEP] (b [SEP]): the frame of the classes in EXACT_CLASSES, as transformers' method names it."""
        return [self.cls_id, *a, self.sep_id] + ([*b, self.sep_id] if b is not None else [])

    def create_token_type_ids_from_sequences(self, a: list[int], b: Optional[list[int]] = None) -> list[int]:
        return [0] * (len(a) + 2) + ([1] * (len(b) + 1) if b is not None else [])

    def encode(self, texts: list[str], pairs: Optional[list[str]] = None) -> dict:
        """``input_ids`` and ``token_type_ids`` per text, truncated to ``max_length`` with the special tokens kept;
        with a ``stride``, also every window of each text (tfbert.windows.encode_windows' columns)."""
        if self.truncation == "head" and self.stride is None:
            inputs = list(zip(texts, pairs)) if pairs is not None else list(texts)
            encodings = self.backend.encode_batch(inputs, add_special_tokens=True)
            return {"input_ids": [e.ids for e in encodings], "token_type_ids": [e.type_ids for e in encodings]}
        plain_a = [e.ids for e in self.backend.encode_batch(list(texts), add_special_tokens=False)]
        plain_b = ([e.ids for e in self.backend.encode_batch(list(pairs), add_special_tokens=False)]
                   if pairs is not None else None)
        budget = self.max_length - (3 if pairs is not None else 2)
        if self.stride is not None:
            from tfbert.windows import encode_windows

            return encode_windows(self, plain_a, budget, self.stride, plain_b)
        encoded = {"input_ids": [], "token_type_ids": []}
        for i, a in enumerate(plain_a):
            b = plain_b[i] if plain_b is not None else None
            if b is not None:
                b = truncate_ids(b, pair_budget(len(a), len(b), budget), self.truncation)
                a = truncate_ids(a, budget - len(b), self.truncation)
            else:
                a = truncate_ids(a, budget, self.truncation)
            encoded["input_ids"].append(self.build_inputs_with_special_tokens(a, b))
            encoded["token_type_ids"].append(self.create_token_type_ids_from_sequences(a, b))
        return encoded

    def pad(self, input_ids: list[list[int]], token_type_ids: Optional[list[list[int]]] = None) -> dict:
        """int32 arrays padded on the right to the longest row: input_ids, attention_mask (and token_type_ids)."""
        width = max((len(row) for row in input_ids), default=0)
        ids = np.full((len(input_ids), width), self.pad_id, np.int32)
        mask = np.zeros((len(input_ids), width), np.int32)
        types = np.zeros((len(input_ids), width), np.int32)
        for i, row in enumerate(input_ids):
            ids[i, :len(row)], mask[i, :len(row)] = row, 1
            if token_type_ids is not None:
                types[i, :len(row)] = token_type_ids[i]
        return {"input_ids": ids, "attention_mask": mask,
                **({"token_type_ids": types} if token_type_ids is not None else {})}


def load_light_tokenizer(folder: str | Path, max_length: Optional[int], truncation: str = "head",
                         word_tokenizer: Optional[str] = None,
                         stride: Optional[int] = None) -> tuple[Optional[LightTokenizer], str]:
    """The tokenizer saved in ``folder`` without transformers, or (None, why not) where its ids could differ
    (``stride``: a windowed model's, tfbert.windows.stride_of).

    Example:
        >>> tokenizer, why = load_light_tokenizer("output/run/compact/tokenizer", 128)  # doctest: +SKIP
        >>> tokenizer is not None or print(why)  # doctest: +SKIP
        True
    """
    folder = Path(folder)
    if word_tokenizer:
        return None, f"--word_tokenizer {word_tokenizer} splits words with transformers' Japanese tokenizer"
    if not max_length:
        return None, "the export records no max_length"
    if not (folder / "tokenizer.json").is_file():
        return None, f"{folder} has no tokenizer.json (a slow tokenizer: SentencePiece or MeCab)"
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, f"{folder}/tokenizer_config.json is missing or not JSON"
    name = str(config.get("tokenizer_class") or "").removesuffix("Fast")
    if name not in EXACT_CLASSES:
        return None, f"{name or 'an unnamed tokenizer class'} is not one whose ids are known to match without transformers"
    if config.get("padding_side", "right") != "right":
        return None, f"padding_side {config['padding_side']} (only right padding is done here)"
    from tokenizers import Tokenizer

    backend = Tokenizer.from_file(str(folder / "tokenizer.json"))
    normalizer = json.loads(backend.to_str()).get("normalizer") or {}
    if "do_lower_case" in config and normalizer.get("type") == "BertNormalizer" \
            and bool(normalizer.get("lowercase")) != bool(config["do_lower_case"]):
        return None, "tokenizer_config.json's do_lower_case differs from tokenizer.json (transformers rewrites it)"
    ids = {role: backend.token_to_id(_token(config, f"{role}_token") or "") for role in ("cls", "sep", "pad")}
    missing = [role for role, token_id in ids.items() if token_id is None]
    if missing:
        return None, f"no {', '.join(missing)} token in the vocabulary"
    return LightTokenizer(backend, max_length=int(max_length), truncation=truncation,
                          direction=config.get("truncation_side", "right"), cls_id=ids["cls"], sep_id=ids["sep"],
                          pad_id=ids["pad"], stride=stride), "tokenizer.json through the tokenizers library"
