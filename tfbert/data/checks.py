"""Checks of tokenised splits that a run reports but does not refuse: the share of unknown tokens (a
vocabulary that does not cover the language) and texts shared across splits (scores that flatter).

Example:
    >>> share_of_japanese(["この商品は最高です", "great phone"]) > 0.5
    True
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

UNKNOWN_TOKEN_LIMIT = 0.05  # over this share of [UNK] in any split, the model cannot read much of the data
OVERLAP_LIMIT = 0.01  # over this share of validation/test texts also in an earlier split, scores flatter the model
JAPANESE_LIMIT = 0.3  # share of kana/kanji among the letters above which texts count as Japanese
JAPANESE_MODEL = "cl-tohoku/bert-base-japanese-v3"
_SAMPLE_TEXTS = 2000  # enough texts to tell the script; the whole corpus is not needed

_JAPANESE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff66-\uff9f]")
_LETTER = re.compile(r"\w")


@dataclass
class DataChecks:
    """What the checks measured per split, and the warnings they raise (empty when all is well)."""

    unknown_token_share: dict[str, float]
    overlap_share: dict[str, float]
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"unknown_token_share": self.unknown_token_share, "overlap_share": self.overlap_share}


def unknown_token_share(input_ids: list[list[int]], unk_id: int, special_ids: set[int]) -> float:
    """Share of ``unk_id`` among the tokens that are not special ([CLS], [SEP], [PAD], ...).

    Example:
        >>> unknown_token_share([[2, 1, 7, 3], [2, 9, 3]], unk_id=1, special_ids={0, 2, 3})
        0.3333333333333333
    """
    flat = np.fromiter((token for row in input_ids for token in row), dtype=np.int64)
    counted = flat[~np.isin(flat, list(special_ids - {unk_id}))]
    return float((counted == unk_id).mean()) if len(counted) else 0.0


def share_of_japanese(texts: list[str]) -> float:
    """Share of kana and kanji among the letters and digits of ``texts``."""
    sample = "".join(texts[:_SAMPLE_TEXTS])
    letters = len(_LETTER.findall(sample))
    return len(_JAPANESE.findall(sample)) / letters if letters else 0.0


def check_data(corpus, encoded, tokenizer, model_name: str) -> DataChecks:
    """Measure the unknown-token share of every split and the cross-split overlap; word a warning for each limit
    passed (over 5 % unknown tokens in a split, over 1 % of validation or test texts also in an earlier split).

    Example:
        >>> checks = check_data(corpus, encoded, tokenizer, "bert-base-uncased")  # doctest: +SKIP
        >>> checks.unknown_token_share  # doctest: +SKIP
        {'train': 0.002, 'validation': 0.001, 'test': 0.003}
    """
    unknown = {}
    if tokenizer.unk_token_id is not None:
        special = set(tokenizer.all_special_ids)
        unknown = {split: round(unknown_token_share(encoded[split]["input_ids"], tokenizer.unk_token_id, special), 4)
                   for split in encoded}
    overlap = _overlap_share(corpus)
    warnings = [*_unknown_token_warnings(unknown, corpus, model_name), *_overlap_warnings(overlap, corpus)]
    return DataChecks(unknown_token_share=unknown, overlap_share=overlap, warnings=warnings)


def describe_data(corpus, encoded_train, train_lengths: np.ndarray, max_length: int) -> str:
    """The run's data line: splits, task, labels, and how the texts over ``max_length`` tokens are read."""
    from tfbert.windows import describe_reading

    sizes = ", ".join(f"{split} {n}" for split, n in corpus.sizes().items())
    share = float((train_lengths > max_length).mean())
    return (f"data: {corpus.name} ({sizes}); {corpus.task.replace('_', '-')}, {len(corpus.label_names)} label(s); "
            f"{describe_reading(encoded_train, share, max_length)}")


def _overlap_share(corpus) -> dict[str, float]:
    """Share of validation and test texts also found in an earlier split (0 once --dedupe removed them)."""
    sizes, counts = corpus.sizes(), corpus.overlap
    if counts.get("deduplicated"):
        return {split: 0.0 for split in ("validation", "test")}
    return {split: round(counts.get(f"{split}_in_earlier_splits", 0) / max(sizes[split], 1), 4)
            for split in ("validation", "test")}


def _unknown_token_warnings(unknown: dict[str, float], corpus, model_name: str) -> list[str]:
    over = {split: share for split, share in unknown.items() if share > UNKNOWN_TOKEN_LIMIT}
    if not over:
        return []
    japanese = share_of_japanese(corpus.splits["train"][:_SAMPLE_TEXTS]["text"]) > JAPANESE_LIMIT
    advice = (f"the texts are Japanese: try --model_name {JAPANESE_MODEL}" if japanese
              else "try --model_name with a model whose vocabulary covers this language")
    shares = ", ".join(f"{split} {share:.1%}" for split, share in over.items())
    return [f"unknown tokens: {shares} of the tokens are the model's unknown token (over "
            f"{UNKNOWN_TOKEN_LIMIT:.0%}): {model_name}'s vocabulary does not cover these texts; {advice}"]


def _overlap_warnings(overlap: dict[str, float], corpus) -> list[str]:
    over = {split: share for split, share in overlap.items() if share > OVERLAP_LIMIT}
    if not over:
        return []
    counts = {split: corpus.overlap[f"{split}_in_earlier_splits"] for split in over}
    shares = ", ".join(f"{split} {share:.1%} ({counts[split]} text{'s' * (counts[split] != 1)})"
                       for split, share in over.items())
    return [f"overlap: {shares} also in an earlier split (over {OVERLAP_LIMIT:.0%}); their scores flatter the "
            "model; rerun with --dedupe to remove them"]
