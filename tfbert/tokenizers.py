"""Tokenizer loading, including Japanese BERT word splitters (MeCab or basic) and SentencePiece models.

Example:
    >>> from tfbert.tokenizers import load_tokenizer, describe_tokenizer
    >>> tokenizer = load_tokenizer("cl-tohoku/bert-base-japanese-v3", word_tokenizer="basic")  # doctest: +SKIP
    >>> describe_tokenizer(tokenizer)["kind"]  # doctest: +SKIP
    'wordpiece_japanese_basic'
"""

from __future__ import annotations

import functools
import json
import logging
import re
from pathlib import Path
from typing import Optional

from tfbert.errors import TfbertError

logger = logging.getLogger(__name__)

# A run of Japanese/Chinese characters with no space or punctuation in it, long enough to hold several words.
_UNSPACED_RUN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff66-\uff9f]{8,}")

# SentencePiece checkpoints load their slow tokenizer: it runs the SentencePiece model itself (as in
# pre-training), while the fast one re-implements it and tokenises some texts differently, and only the slow
# one has an exact in-graph copy for the SavedModel (tfbert.graph_tokenizers.sentencepiece). Class: model file.
SENTENCEPIECE_SLOW = {"XLMRobertaTokenizer": "sentencepiece.bpe.model", "CamembertTokenizer": "sentencepiece.bpe.model",
                      "AlbertTokenizer": "spiece.model"}
_MODEL_TYPE_TOKENIZERS = {"xlm-roberta": "XLMRobertaTokenizer", "camembert": "CamembertTokenizer",
                          "albert": "AlbertTokenizer"}


def _check_mecab() -> None:
    try:
        import fugashi  # noqa: F401
        import unidic_lite  # noqa: F401
    except ImportError:
        raise TfbertError(
            "--word_tokenizer mecab: fugashi and unidic-lite are not installed; "
            "pip install fugashi unidic-lite, or use --word_tokenizer basic"
        ) from None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def uses_slow_sentencepiece(name_or_path: str) -> bool:
    """Whether ``name_or_path`` is a local folder of an XLM-R / CamemBERT / ALBERT tokenizer with its
    SentencePiece model file (and the sentencepiece package is installed), so tfbert loads it slow."""
    folder = Path(name_or_path)
    if not folder.is_dir():
        return False
    name = _read_json(folder / "tokenizer_config.json").get("tokenizer_class") \
        or _MODEL_TYPE_TOKENIZERS.get(_read_json(folder / "config.json").get("model_type", ""), "")
    model_file = SENTENCEPIECE_SLOW.get(str(name).removesuffix("Fast"))
    if model_file is None or not (folder / model_file).is_file():
        return False
    try:
        import sentencepiece  # noqa: F401
    except ImportError:
        return False
    return True


def load_tokenizer(name_or_path: str, word_tokenizer: Optional[str] = None, **kwargs):
    """The checkpoint's tokenizer through AutoTokenizer: fast where one exists, except SentencePiece
    checkpoints (XLM-R, CamemBERT, ALBERT folders with their .model file), which get the slow SentencePiece one.

    Args:
        name_or_path: a local folder or Hub id.
        word_tokenizer: for BertJapaneseTokenizer checkpoints, ``mecab`` (fugashi + unidic-lite) or
            ``basic`` (no MeCab; transformers' basic splitter cuts at spaces and punctuation only, not between
            Japanese characters: see :func:`warn_unspaced_runs`).
    """
    from transformers import AutoTokenizer

    if word_tokenizer == "mecab":
        _check_mecab()
        kwargs.update(word_tokenizer_type="mecab", mecab_kwargs={"mecab_dic": "unidic_lite"})
    elif word_tokenizer == "basic":
        kwargs.update(word_tokenizer_type="basic")
    if uses_slow_sentencepiece(name_or_path):
        kwargs.setdefault("use_fast", False)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    except (ImportError, ModuleNotFoundError) as error:
        if "fugashi" in str(error) or "unidic" in str(error) or "MeCab" in str(error):
            raise TfbertError(
                f"--model_name {name_or_path}: its tokenizer needs MeCab ({error}); "
                "pip install fugashi unidic-lite, or pass --word_tokenizer basic"
            ) from None
        raise
    except (OSError, ValueError) as error:
        detail = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise TfbertError(f"--model_name {name_or_path}: cannot load its tokenizer ({detail})") from None
    if word_tokenizer and type(tokenizer).__name__ != "BertJapaneseTokenizer":
        raise TfbertError(
            f"--word_tokenizer {word_tokenizer}: only applies to Japanese BERT tokenizers "
            f"(BertJapaneseTokenizer); {name_or_path} has {type(tokenizer).__name__}"
        )
    return tokenizer


def describe_tokenizer(tokenizer) -> dict:
    """What kind of tokenizer this is, for exports and reports.

    kind is one of wordpiece, wordpiece_japanese_mecab, wordpiece_japanese_basic, sentencepiece, other.
    """
    name = type(tokenizer).__name__
    lower = bool(getattr(tokenizer, "do_lower_case", False))
    if name == "BertJapaneseTokenizer":
        kind = f"wordpiece_japanese_{getattr(tokenizer, 'word_tokenizer_type', 'mecab')}"
        if getattr(tokenizer, "subword_tokenizer_type", "wordpiece") != "wordpiece":
            kind = "other"
    elif name.startswith("BertTokenizer") or name.startswith("DistilBertTokenizer") or name.startswith("ElectraTokenizer"):
        kind = "wordpiece"
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None:  # fast tokenizers keep do_lower_case in the normalizer
            import json

            normalizer = json.loads(backend.to_str()).get("normalizer") or {}
            lower = bool(normalizer.get("lowercase", lower))
    elif getattr(tokenizer, "vocab_file", "") and str(getattr(tokenizer, "vocab_file", "")).endswith(".model"):
        kind = "sentencepiece"
    else:
        kind = "other"
    return {"kind": kind, "class": name, "do_lower_case": lower, "vocab_size": len(tokenizer)}


def unspaced_share(texts: list[str]) -> float:
    """Share of the characters of ``texts`` that sit in runs of 8+ Japanese/Chinese characters without a space
    or punctuation mark.

    Example:
        >>> unspaced_share(["この商品は最高です", "good"])
        0.6923
    """
    total = sum(len(text) for text in texts)
    inside = sum(len(run) for text in texts for run in _UNSPACED_RUN.findall(text))
    return round(inside / total, 4) if total else 0.0


def warn_unspaced_runs(tokenizer, texts: list[str], threshold: float = 0.5) -> bool:
    """Warn (once per process) when a ``--word_tokenizer basic`` Japanese tokenizer meets mostly unspaced text.

    transformers' BertJapaneseTokenizer with ``word_tokenizer_type="basic"`` splits at spaces and punctuation
    only (unlike BERT's BasicTokenizer it does not split around CJK characters, so that the vocabulary's words
    stay whole); a run of unspaced Japanese is one word that WordPiece cuts greedily, and a run over 100
    characters becomes one [UNK]. Returns whether the texts are mostly such runs.
    """
    if type(tokenizer).__name__ != "BertJapaneseTokenizer" or getattr(tokenizer, "word_tokenizer_type", "") != "basic":
        return False
    share = unspaced_share(list(texts[:2000]))
    if share >= threshold:
        _warn_once(f"--word_tokenizer basic: {share:.0%} of the text is unspaced Japanese runs of 8+ characters, "
                   "which the basic splitter keeps as single words (WordPiece then cuts them greedily; a run over "
                   "100 characters becomes [UNK]); use --word_tokenizer mecab (pip install fugashi unidic-lite)")
    return share >= threshold


@functools.lru_cache(maxsize=None)
def _warn_once(message: str) -> None:
    logger.warning(message)
