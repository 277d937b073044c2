"""Real tokenizers of each kind the Japanese-first toolkit meets, built in the test."""

import random

import pytest

from tfbert.errors import TfbertError
from tfbert.tokenizers import describe_tokenizer, load_tokenizer, uses_slow_sentencepiece

JAPANESE_WORDS = ["この", "商品", "は", "最高", "です", "最悪", "とても", "良い", "悪い", "届き", "ました", "値段",
                  "が", "安い", "高い", "使い", "やすい", "にくい", "また", "買い", "たい", "。", "、"]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.fixture()
def japanese_bert_folder(tmp_path):
    from transformers import BertJapaneseTokenizer

    (tmp_path / "vocab.txt").write_text("\n".join(SPECIALS + JAPANESE_WORDS + list("商品最高悪")) + "\n", encoding="utf-8")
    tokenizer = BertJapaneseTokenizer(str(tmp_path / "vocab.txt"), word_tokenizer_type="mecab",
                                      mecab_kwargs={"mecab_dic": "unidic_lite"})
    tokenizer.save_pretrained(tmp_path / "tok")
    return tmp_path / "tok"


def test_japanese_bert_with_mecab_and_basic(japanese_bert_folder):
    mecab = load_tokenizer(str(japanese_bert_folder), word_tokenizer="mecab")
    assert mecab.tokenize("この商品は最高です。") == ["この", "商品", "は", "最高", "です", "。"]
    assert describe_tokenizer(mecab)["kind"] == "wordpiece_japanese_mecab"
    basic = load_tokenizer(str(japanese_bert_folder), word_tokenizer="basic")
    assert describe_tokenizer(basic)["kind"] == "wordpiece_japanese_basic"
    # Without MeCab, words split on spaces and punctuation only: an unspaced sentence is one unknown word.
    assert basic.tokenize("この商品は最高です。") == ["[UNK]", "。"]
    assert basic.tokenize("この 商品 は 最高 です 。") == ["この", "商品", "は", "最高", "です", "。"]
    assert load_tokenizer(str(japanese_bert_folder)).tokenize("商品") == ["商品"]  # the saved setting: MeCab


def test_word_tokenizer_flag_on_a_non_japanese_tokenizer(tiny_model_dir):
    with pytest.raises(TfbertError, match="only applies to Japanese BERT tokenizers"):
        load_tokenizer(str(tiny_model_dir), word_tokenizer="basic")


def test_sentencepiece_tokenizer_trained_here(tmp_path):
    import sentencepiece as spm
    from transformers import XLMRobertaTokenizer

    rng = random.Random(0)
    sentences = ["".join(rng.choices(JAPANESE_WORDS, k=rng.randint(4, 12))) for _ in range(400)]
    (tmp_path / "corpus.txt").write_text("\n".join(sentences), encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(tmp_path / "corpus.txt"), model_prefix=str(tmp_path / "sp"),
                                   vocab_size=120, character_coverage=1.0, model_type="unigram")
    XLMRobertaTokenizer(vocab_file=str(tmp_path / "sp.model")).save_pretrained(tmp_path / "xlmr")
    tokenizer = load_tokenizer(str(tmp_path / "xlmr"))
    # The slow tokenizer (SentencePiece itself), not the fast re-implementation: it has an in-graph copy.
    assert type(tokenizer) is XLMRobertaTokenizer
    pieces = tokenizer.tokenize("この商品は最高です")
    assert "".join(pieces).replace("▁", "") == "この商品は最高です"
    assert tokenizer("この商品は最高です")["input_ids"][0] == tokenizer.cls_token_id
    info = describe_tokenizer(tokenizer)
    assert info["kind"] == "sentencepiece" and info["vocab_size"] >= 120
    from tfbert.graph_tokenizers import in_graph_tokenization

    assert in_graph_tokenization(tokenizer, "head")[0] is True
    assert type(load_tokenizer(str(tmp_path / "xlmr"), use_fast=True)).__name__ == "XLMRobertaTokenizerFast"
    (tmp_path / "xlmr" / "sentencepiece.bpe.model").unlink()  # without the model file only a fast one can load
    assert uses_slow_sentencepiece(str(tmp_path / "xlmr")) is False


def test_unloadable_tokenizer_is_one_line(tmp_path):
    with pytest.raises(TfbertError, match="cannot load its tokenizer"):
        load_tokenizer(str(tmp_path))


def test_basic_word_splitter_warns_once_on_unspaced_japanese(japanese_bert_folder, caplog):
    from tfbert.tokenizers import _warn_once, warn_unspaced_runs

    _warn_once.cache_clear()
    basic = load_tokenizer(str(japanese_bert_folder), word_tokenizer="basic")
    mecab = load_tokenizer(str(japanese_bert_folder), word_tokenizer="mecab")
    unspaced = ["この商品は最高です。また買いたい。", "値段が安いのにとても良い。"]
    spaced = ["この 商品 は 最高 です 。", "値段 が 安い 。"]
    with caplog.at_level("WARNING", logger="tfbert.tokenizers"):
        assert warn_unspaced_runs(basic, unspaced) and warn_unspaced_runs(basic, unspaced)
        assert not warn_unspaced_runs(basic, spaced)
        assert not warn_unspaced_runs(mecab, unspaced)
    warnings = [r.getMessage() for r in caplog.records if "--word_tokenizer basic" in r.getMessage()]
    assert len(warnings) == 1 and "--word_tokenizer mecab" in warnings[0]


def test_tokenize_warns_about_unspaced_text(japanese_bert_folder, caplog):
    import datasets

    from tfbert.data.pipeline import tokenize
    from tfbert.tokenizers import _warn_once

    _warn_once.cache_clear()
    basic = load_tokenizer(str(japanese_bert_folder), word_tokenizer="basic")
    splits = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["この商品は最高です。"] * 4})})
    with caplog.at_level("WARNING", logger="tfbert.tokenizers"):
        tokenize(splits, basic, max_length=16)
    assert any("unspaced Japanese" in r.getMessage() for r in caplog.records)
