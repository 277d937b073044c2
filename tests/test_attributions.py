"""Integrated gradients: attributions add up to the logit change (completeness), one score per token the model saw,
with WordPiece and SentencePiece tokenizers, and infer.py --explain."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from test_graph_tokenizers_sentencepiece import sp_models, write_checkpoint  # noqa: F401  (a fixture)

from tfbert import attributions, modeling
from tfbert.attributions import COMPLETENESS_LIMIT, Explanation, display_tokens, explain
from tfbert.errors import TfbertError
from tfbert.model_settings import ModelSettings

LABELS = ["neg", "neu", "pos"]
TEXTS = ["this phone is great, really good", "awful book and a broken item", "okay", "the best product, love it!"]
WORST = {}  # tokenizer kind -> the largest completeness error seen, printed at the end of the module


@pytest.fixture(scope="module")
def wordpiece(tiny_model_dir):
    return modeling.load_for_training(tiny_model_dir, LABELS), modeling.load_tokenizer(tiny_model_dir)


def _check(explanations: list[Explanation], tokenizer, texts, pairs=None, kind="wordpiece"):
    encoded = tokenizer(texts, pairs)["input_ids"]
    for explanation, ids in zip(explanations, encoded):
        assert explanation.tokens == tokenizer.convert_ids_to_tokens(ids)  # the tokens the model saw
        assert explanation.scores.shape == (len(explanation.tokens),)
        assert np.all(np.isfinite(explanation.scores))
        assert explanation.completeness_error < COMPLETENESS_LIMIT, explanation
        special = np.asarray(explanation.special)
        assert special[0] and special[-1] and np.all(explanation.scores[special] == 0)  # kept from the baseline
        WORST[kind] = max(WORST.get(kind, 0.0), explanation.completeness_error)


def test_attributions_add_up_to_the_logit_change_wordpiece(wordpiece):
    model, tokenizer = wordpiece
    explanations = explain(model, tokenizer, TEXTS, steps=32)
    _check(explanations, tokenizer, TEXTS)
    logits = model(dict(tokenizer(TEXTS, padding=True, return_tensors="tf")), training=False).logits.numpy()
    assert [e.target for e in explanations] == list(logits.argmax(axis=1))  # the predicted class by default
    # The sum equals logit(input) - logit(baseline): check the left end by hand for one text.
    first = explanations[0]
    assert abs(first.scores.sum() - first.logit_change) <= COMPLETENESS_LIMIT * abs(first.logit_change)


def test_pairs_and_a_fixed_target(wordpiece):
    model, tokenizer = wordpiece
    pairs = ["bad", "good item", "fine", "worst"]
    explanations = explain(model, tokenizer, TEXTS, pairs, target=0, steps=32)
    _check(explanations, tokenizer, TEXTS, pairs)
    assert {e.target for e in explanations} == {0}
    assert explanations[0].tokens.count("[SEP]") == 2


def test_a_path_over_the_limit_is_redone_once_with_more_steps(wordpiece, monkeypatch):
    model, tokenizer = wordpiece
    (coarse,) = explain(model, tokenizer, [TEXTS[0]], steps=1)  # one trapezoid
    WORST["wordpiece, 1 step"] = coarse.completeness_error
    monkeypatch.setattr(attributions, "COMPLETENESS_LIMIT", -1.0)  # every path is "over": exactly one retry
    (retried,) = explain(model, tokenizer, [TEXTS[0]], steps=2)
    assert retried.steps == 2 * attributions.RETRY_FACTOR


@pytest.mark.parametrize("kind", ["xlmr", "albert"])
def test_attributions_add_up_with_sentencepiece(kind, sp_models, tmp_path):  # noqa: F811
    folder = write_checkpoint(kind, sp_models, tmp_path / "checkpoint")
    model, tokenizer = modeling.load_for_training(folder, LABELS), modeling.load_tokenizer(folder)
    texts = ["The quick brown Fox jumps", "Café naïve この商品は最高です 😀", "GOOD item price"]
    explanations = explain(model, tokenizer, texts, steps=32)
    _check(explanations, tokenizer, texts, kind=kind)
    assert any(token.startswith("▁") for token in explanations[0].tokens)


def test_top_tokens_leave_special_tokens_out_and_display_joins_pieces():
    explanation = Explanation(["[CLS]", "good", "##ly", "[SEP]"], np.array([0.0, 0.5, -0.7, 0.0]), 2, 0.01, -0.2, 32,
                              [True, False, False, True])
    assert explanation.top_tokens(5) == [("##ly", -0.7), ("good", 0.5)]
    assert "##ly -0.700" in explanation.describe() and "1.0%" in explanation.describe()
    assert json.loads(json.dumps(explanation.to_dict()))["top_tokens"][0] == ["##ly", -0.7]
    assert display_tokens(["[CLS]", "good", "##ly", "[SEP]"]) == [("[CLS]", False), ("good", True), ("ly", False),
                                                                  ("[SEP]", True)]
    assert display_tokens(["<s>", "▁Café", "▁na", "ïve", "</s>"]) == [
        ("<s>", False), ("Café", True), ("na", True), ("ïve", False), ("</s>", False)]


def test_explain_needs_the_keras_model():
    class SavedModelLike:
        labels = LABELS

    with pytest.raises(TfbertError, match="--explain needs the Keras model: give --model a run folder"):
        attributions.explain_predictor(SavedModelLike(), ["text"])


def test_infer_explain_prints_the_top_tokens(wordpiece, tmp_path, monkeypatch, capsys):
    import infer

    model, tokenizer = wordpiece
    folder = tmp_path / "model"
    modeling.save_classifier(model, tokenizer, folder, ModelSettings(labels=LABELS, max_length=32))
    monkeypatch.setattr(sys, "argv", ["infer.py", "--model", str(folder), "--explain", "great phone", "bad book"])
    assert infer.run_main(infer.main) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and lines[1].startswith("  why ") and "completeness error" in lines[1]
    assert lines[1].split(":")[0].split()[-1] in LABELS and ("great" in lines[1] or "phone" in lines[1])
    monkeypatch.setattr(sys, "argv", ["infer.py", "--model", str(folder), "--explain", "--json", "great phone"])
    assert infer.run_main(infer.main) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["explanation"]["completeness_error"] < COMPLETENESS_LIMIT
    assert LABELS[answer["explanation"]["target"]] == answer["label"]
    assert {token for token, _ in answer["explanation"]["top_tokens"]} <= {"great", "phone"}


def teardown_module():
    print("\nworst completeness error:", {kind: f"{error:.3%}" for kind, error in WORST.items()}, file=sys.stderr)
