"""In-graph SentencePiece (XLM-R, CamemBERT, ALBERT): token ids equal the slow tokenizer's, the SavedModel's
probabilities equal the Keras model's, and fast tokenizers (a re-implementation) fall back to predict_ids.

SentencePiece models are trained here in a second on a small multilingual corpus; nothing is downloaded.
"""

import random
from pathlib import Path

import datasets
import numpy as np
import pytest
from test_export import saved_model_cli_signatures
from test_graph_tokenizers_common import SAMPLE, in_graph_ids, random_texts

from tfbert import modeling
from tfbert.data.pipeline import encode_batch
from tfbert.evaluation import predict_probabilities
from tfbert.export import export_saved_model
from tfbert.graph_tokenizers import in_graph_tokenization
from tfbert.graph_tokenizers.common import TRUNCATIONS
from tfbert.predictors import SavedModelPredictor

ENGLISH = "The quick brown Fox jumps over the lazy dog . Café naïve résumé Über straße GOOD item price".split()
JAPANESE = ["この", "商品", "は", "最高", "です", "最悪", "とても", "良い", "届き", "ました", "。", "、"]
GREEK = ["οδός", "ΟΔΟΣ", "σοφία", "Σοφός", "λόγος", "ΛΟΓΟΣ"]  # σ inside words, ς at their end
NUMBERS = ["1,000", "9,99", "12,5", "3,", "2019,"]  # ALBERT re-splits pieces ending in a digit and a comma
EMOJI = ["😀", "🎉", "👍"]
# The sample of the issue and the corner cases of each step the in-graph copy mirrors.
MULTILINGUAL = SAMPLE + [
    "Ελληνικά: ΟΔΟΣ οδός Α𝚺 𝚺Α ς𝚺. 𝚺", "``quoted'' and ''twice``", "9,99 12,000, 1,2,3 a9, ９, 2019,5",
    "<mask> a <mask>b\u3000<mask>", "x [MASK] y\x1c[MASK] [MASK]", "a <eat>  b<eat>\u3000<eat>", "<New> <NEW>",
    "<UNK> <unk> [cls] [CLS] <s></s><pad>", "nul\x00 <s>\x00</s> \x01", "   lead and trail   ", "İstanbul ǅ ß Å Ω K",
    "good " * 300]


def corpus(n: int = 600, seed: int = 0) -> str:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        words = rng.choices(ENGLISH, k=rng.randint(3, 8)) + rng.choices(GREEK + NUMBERS, k=rng.randint(0, 3))
        if rng.random() < 0.5:
            words.append("".join(rng.choices(JAPANESE, k=rng.randint(2, 6))))
        if rng.random() < 0.3:
            words.append(rng.choice(EMOJI))
        rng.shuffle(words)
        lines.append(" ".join(words))
    return "\n".join(lines)


def fuzzed(n: int, seed: int) -> list[str]:
    """random_texts plus words of the corpus, Greek capitals, numbers with commas and the special tokens."""
    rng = random.Random(seed)
    extra = GREEK + NUMBERS + ["Σ", "𝚺", "ΣΑ", "''", "``", "<mask>", "<s>", "[SEP]", "<eat>", "<New>", "<NEW>",
                               "\u3000", " "]
    texts = []
    for text in random_texts(n, seed):
        words = text.split(" ") + rng.choices(extra + ENGLISH, k=rng.randint(0, 4))
        rng.shuffle(words)
        texts.append(rng.choice([" ", "", "\u3000"]).join(words))
    return texts


# Like the real checkpoints: XLM-R's <unk>, <s>, </s> first; ALBERT's <pad>, <unk>, [CLS], [SEP], [MASK].
SP_MODELS = {
    "unigram": dict(model_type="unigram", vocab_size=250),
    # BPE with byte fallback, keeping extra spaces: whitespace eaten by <mask> (lstrip) then shows in the ids.
    "bpe_bytes": dict(model_type="bpe", vocab_size=420, byte_fallback=True, remove_extra_whitespaces=False),
    "albert": dict(model_type="unigram", vocab_size=250, pad_id=0, unk_id=1, bos_id=-1, eos_id=-1,
                   control_symbols=["[CLS]", "[SEP]", "[MASK]"], split_by_number=False),
}


@pytest.fixture(scope="module")
def sp_models(tmp_path_factory) -> dict[str, str]:
    import sentencepiece as spm

    folder = tmp_path_factory.mktemp("sentencepiece")
    (folder / "corpus.txt").write_text(corpus(), encoding="utf-8")
    for name, options in SP_MODELS.items():
        spm.SentencePieceTrainer.train(input=str(folder / "corpus.txt"), model_prefix=str(folder / name),
                                       character_coverage=1.0, minloglevel=2, **options)
    return {name: str(folder / f"{name}.model") for name in SP_MODELS}


def with_added_tokens(tokenizer, *tokens):
    tokenizer.add_tokens(list(tokens))
    return tokenizer


def slow_tokenizer(kind: str, sp_models: dict):
    from transformers import AddedToken, AlbertTokenizer, CamembertTokenizer, XLMRobertaTokenizer

    return {
        "xlmr": lambda: XLMRobertaTokenizer(sp_models["unigram"]),
        "xlmr_bpe_bytes": lambda: XLMRobertaTokenizer(sp_models["bpe_bytes"]),
        "camembert": lambda: CamembertTokenizer(sp_models["unigram"]),
        "albert": lambda: AlbertTokenizer(sp_models["albert"]),
        "albert_cased_accents": lambda: AlbertTokenizer(sp_models["albert"], do_lower_case=False, keep_accents=True),
        "albert_keep_space": lambda: AlbertTokenizer(sp_models["albert"], remove_space=False),
        # An added token eating the spaces on both sides; a user token, which a do_lower_case tokenizer stores
        # lower-cased (<new>) and so finds in lower-cased text only: lower-casing comes before the split.
        "xlmr_added_tokens": lambda: with_added_tokens(
            XLMRobertaTokenizer(sp_models["bpe_bytes"]), AddedToken("<eat>", lstrip=True, rstrip=True, special=True)),
        "albert_added_tokens": lambda: with_added_tokens(
            AlbertTokenizer(sp_models["albert"]), AddedToken("<New>", normalized=True, special=False)),
    }[kind]()


KINDS = ["xlmr", "xlmr_bpe_bytes", "camembert", "albert", "albert_cased_accents", "albert_keep_space",
         "xlmr_added_tokens", "albert_added_tokens"]


@pytest.mark.parametrize("kind", KINDS)
def test_in_graph_ids_equal_the_slow_tokenizer(kind, sp_models):
    tokenizer = slow_tokenizer(kind, sp_models)
    assert in_graph_tokenization(tokenizer, "head")[0] is True
    texts = MULTILINGUAL + fuzzed(300, seed=KINDS.index(kind))
    for truncation in TRUNCATIONS:
        ids, types = in_graph_ids(tokenizer, texts, 16, truncation)
        expected = encode_batch(tokenizer, texts, None, 16, truncation)
        assert ids == expected["input_ids"]
        assert types == expected.get("token_type_ids", [[0] * len(row) for row in ids])
    ids, _ = in_graph_ids(tokenizer, texts, 2048)  # nothing cut: every piece of every text compared
    expected = tokenizer(texts, truncation=True, max_length=2048)["input_ids"]
    mismatches = [(text, tokenizer.convert_ids_to_tokens(a), tokenizer.convert_ids_to_tokens(b))
                  for text, a, b in zip(texts, ids, expected) if a != b]
    assert not mismatches, mismatches[:2]


@pytest.mark.parametrize("kind", ["xlmr", "albert"])
def test_in_graph_pairs_equal_the_slow_tokenizer(kind, sp_models):
    tokenizer = slow_tokenizer(kind, sp_models)
    texts = fuzzed(200, seed=10)
    firsts = ["good item", "bad " * 30, "", "a b c d e f g", "good " * 7, "one two"] + texts[:100]
    seconds = ["bad " * 30, "good item", "okay", "h i j k l m n", "bad " * 7, "three four"] + texts[100:]
    for truncation in TRUNCATIONS:
        for max_length in (16, 17):  # odd and even budgets split differently
            ids, types = in_graph_ids(tokenizer, firsts, max_length, truncation, pairs=seconds)
            expected = encode_batch(tokenizer, firsts, seconds, max_length, truncation)
            assert ids == expected["input_ids"]
            assert types == expected.get("token_type_ids", [[0] * len(row) for row in ids])


def test_fast_sentencepiece_tokenizers_fall_back_to_predict_ids(sp_models, tmp_path):
    from transformers import AlbertTokenizer, XLMRobertaTokenizer, XLMRobertaTokenizerFast

    fast = XLMRobertaTokenizerFast(vocab_file=sp_models["unigram"])
    exact, reason = in_graph_tokenization(fast, "head")
    assert exact is False and "re-implementation of SentencePiece" in reason and "predict_ids" in reason
    fast.save_pretrained(tmp_path / "fast")
    (tmp_path / "fast" / "sentencepiece.bpe.model").unlink()
    fast_only = XLMRobertaTokenizerFast.from_pretrained(tmp_path / "fast")
    exact, reason = in_graph_tokenization(fast_only, "head")
    assert exact is False and "without its SentencePiece model file" in reason
    sampling = XLMRobertaTokenizer(sp_models["unigram"], sp_model_kwargs={"enable_sampling": True, "alpha": 0.1})
    assert in_graph_tokenization(sampling, "head")[0] is False
    left = AlbertTokenizer(sp_models["albert"], truncation_side="left")
    assert "truncation_side" in in_graph_tokenization(left, "head")[1]


def write_checkpoint(kind: str, sp_models: dict, folder: Path) -> Path:
    """A tiny random XLM-R or ALBERT encoder and its slow tokenizer, saved like a Hub checkpoint."""
    import tensorflow as tf
    from transformers import AlbertConfig, TFAlbertModel, TFXLMRobertaModel, XLMRobertaConfig

    tokenizer = slow_tokenizer(kind, sp_models)
    sizes = dict(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                 intermediate_size=32, initializer_range=0.2)
    tf.keras.utils.set_random_seed(0)
    if kind == "xlmr":
        model = TFXLMRobertaModel(XLMRobertaConfig(max_position_embeddings=66, pad_token_id=tokenizer.pad_token_id,
                                                   bos_token_id=0, eos_token_id=2, **sizes))
    else:
        model = TFAlbertModel(AlbertConfig(embedding_size=8, max_position_embeddings=64,
                                           pad_token_id=tokenizer.pad_token_id, **sizes))
    model(model.dummy_inputs)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("kind", ["xlmr", "albert"])
@pytest.mark.slow
def test_saved_model_with_in_graph_sentencepiece_equals_keras(kind, sp_models, tmp_path):
    folder = write_checkpoint(kind, sp_models, tmp_path / "checkpoint")
    labels = {0: "neg", 1: "neu", 2: "pos"}
    model = modeling.load_for_training(folder, list(labels.values()))
    tokenizer = modeling.load_tokenizer(folder)
    assert type(tokenizer) is type(slow_tokenizer(kind, sp_models))  # the slow SentencePiece tokenizer
    version = export_saved_model(model, tokenizer, id2label=labels, max_length=32, base_dir=tmp_path / "export",
                                 truncation="head_tail")
    predictor = SavedModelPredictor(version)
    assert predictor.metadata["in_graph_tokenization"] is True and predictor.tokenizer is None
    assert predictor.metadata["tokenizer"]["kind"] == "sentencepiece"
    assert set(predictor.loaded.signatures) == {"serving_default", "predict_text_pair", "predict_ids"}
    texts, pairs = MULTILINGUAL, list(reversed(MULTILINGUAL))
    for second in (None, pairs):
        encoded = encode_batch(tokenizer, texts, second, 32, "head_tail")
        expected = predict_probabilities(model, datasets.Dataset.from_dict(encoded), tokenizer, 4)
        np.testing.assert_allclose(predictor.predict(texts, second), expected, atol=1e-5)
    if kind == "albert":  # one CLI run is enough: it takes seconds
        names, shown = saved_model_cli_signatures(version)
        assert names == {"serving_default", "predict_ids", "predict_text_pair"}
        assert "inputs['text'] tensor_info:\n        dtype: DT_STRING" in shown


@pytest.mark.slow
def test_train_cli_on_xlmr_with_a_frozen_encoder_and_an_mlp_head(sp_models, tmp_path):
    """XLM-R hands its classifier every token's state: the MLP head must read the first token, through
    training, the saved folder, and the SavedModel (where the last layer computes that token only)."""
    from conftest import make_rows, write_jsonl
    from test_cli import run_cli

    folder = write_checkpoint("xlmr", sp_models, tmp_path / "xlmr")
    write_jsonl(tmp_path / "reviews.jsonl", make_rows(90))
    completed = run_cli("train.py", "--train_file", "reviews.jsonl", "--model_name", str(folder), "--epochs", "1",
                        "--max_length", "32", "--precision", "float32", "--freeze_encoder", "--head_hidden_size", "8",
                        "--quiet", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    run = next((tmp_path / "output" / "reviews").glob("*/*"))
    model = modeling.load_classifier(run / "model")
    tokenizer = modeling.load_tokenizer(run / "model")
    texts = ["great phone really good", "awful broken item", "okay item"]
    expected = predict_probabilities(model, datasets.Dataset.from_dict(encode_batch(tokenizer, texts, None, 32, "head")),
                                     tokenizer, 4)
    assert expected.shape == (3, 3)
    np.testing.assert_allclose(SavedModelPredictor(run / "saved_model").predict(texts), expected, atol=1e-5)
