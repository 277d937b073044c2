"""What the in-graph tokenizers share (tfbert.graph_tokenizers.common) and the package's door (text_encoder,
in_graph_tokenization); the helpers here compare an in-graph copy with its Hugging Face tokenizer."""

import random

import pytest

from tfbert import modeling
from tfbert.errors import TfbertError
from tfbert.graph_tokenizers import in_graph_tokenization, text_encoder
from tfbert.graph_tokenizers.common import (CASED, TRUNCATIONS, char_class, common_refusal, frame_template,
                                            python_text_tables)

SAMPLE = ["Hello World, Café NAÏVE résumé!", "この商品は最高です", "😀 good!! 🎉", "", "good " * 80,
          "BAD item... really?  tabs\tand\nnewlines", "Ünïcödé ÅÇÇÊÑTS", "price: $9.99 (50% off) #deal @shop",
          "ideographic\u3000space\xa0nbsp zero\u200bwidth \x92quote\x00 \ufffd", "ß straße İstanbul ǅ"]


def in_graph_ids(tokenizer, texts, max_length, truncation="head", pairs=None):
    """Token ids (without padding) and token type ids from the export's own TF Text tokenisation."""
    import tensorflow as tf

    encoder = text_encoder(tokenizer, max_length, truncation)
    ids, mask, types = encoder.encode(tf.constant(texts), None if pairs is None else tf.constant(pairs))
    keep = mask.numpy() == 1
    return ([row[k].tolist() for row, k in zip(ids.numpy(), keep)],
            [row[k].tolist() for row, k in zip(types.numpy(), keep)])


def random_texts(n: int, seed: int = 0) -> list[str]:
    """Adversarial texts: many scripts, controls, private use, new Unicode, special tokens, over-long words."""
    rng = random.Random(seed)
    pools = [(0x20, 0x7F), (0x80, 0x250), (0x300, 0x370), (0x370, 0x530), (0x590, 0x700), (0xE00, 0xE80),
             (0x1E00, 0x2070), (0x2C00, 0x2E80), (0x3000, 0x3100), (0x4E00, 0x4F00), (0xAC00, 0xAC80),
             (0xFB00, 0xFB50), (0xFF00, 0xFF70), (0xFFF0, 0x10000), (0xE000, 0xE010), (0x0, 0x20),
             (0x10000, 0x10100), (0x1D400, 0x1D500), (0x1F300, 0x1F700), (0x20000, 0x20010)]
    texts = []
    for _ in range(n):
        words = ["".join(chr(rng.randrange(*rng.choice(pools))) for _ in range(rng.randint(1, 8)))
                 for _ in range(rng.randint(0, 10))]
        if rng.random() < 0.3:
            position = rng.randint(0, len(words))  # drawn before the token, as ever: the same texts for every seed
            words.insert(position, rng.choice(["[CLS]", "[SEP]", "[UNK]", "[MASK]", "[cls]", "[CL S]"]))
        if rng.random() < 0.1:
            words.append(rng.choice("aéж") * rng.randint(95, 105))  # around max_input_chars_per_word (100)
        texts.append(rng.choice(["", " ", "\u3000"]).join(words))
    return texts


def test_char_class_matches_exactly_its_code_points():
    import tensorflow as tf

    pattern = char_class([0x43, 0x41, 0x42, 0x5F, 0x1F600])
    assert pattern == r"[\x{41}-\x{43}\x{5F}\x{1F600}]" and char_class([]) == ""
    texts = ["A", "B", "C", "_", "😀", "D", "a", "^"]
    matches = tf.strings.regex_full_match(tf.constant(texts), pattern).numpy().tolist()  # RE2, as the graph runs it
    assert matches == [True] * 5 + [False] * 3


def test_python_text_tables_read_this_python():
    tables = python_text_tables()
    assert tables["nfkd_strip"]["é"] == "e" and tables["lower"]["Σ"] == "σ" and tables["sigma"]["A"] == CASED


def test_frame_template_and_the_refusals_every_kind_shares(tiny_model_dir):
    tokenizer = modeling.load_tokenizer(tiny_model_dir)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    assert frame_template(tokenizer) == {"single": [cls, -1, sep], "pair": [cls, -1, sep, -2, sep],
                                         "single_types": [0, 0, 0], "pair_types": [0, 0, 0, 1, 1]}
    assert common_refusal(tokenizer) is None
    tokenizer.truncation_side = "left"
    assert "truncation_side='left'" in common_refusal(tokenizer)
    exact, reason = in_graph_tokenization(tokenizer, "head")
    assert exact is False and "truncation_side" in reason and "predict_ids" in reason
    with pytest.raises(TfbertError, match="truncation_side"):
        text_encoder(tokenizer, 16)


def test_unknown_truncation_is_refused(tiny_model_dir):
    tokenizer = modeling.load_tokenizer(tiny_model_dir)
    assert all(in_graph_tokenization(tokenizer, truncation)[0] for truncation in TRUNCATIONS)
    exact, reason = in_graph_tokenization(tokenizer, "middle")
    assert exact is False and "'middle' is not one of" in reason
    with pytest.raises(TfbertError, match="--truncation middle: choose one of head, tail, head_tail"):
        text_encoder(tokenizer, 16, "middle")
