"""Leaving encoder layers out: the smaller model computes the remaining stack, and the greedy search's choices."""

import numpy as np
import pytest
from conftest import tiny_classifier, write_tiny_model

from tfbert import layer_drop, modeling

INPUTS = {"input_ids": np.array([[2, 5, 9, 12, 7, 3], [2, 8, 3, 0, 0, 0]], np.int32),
          "attention_mask": np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], np.int32)}


@pytest.fixture(scope="module")
def three_layer_folder(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("bert3"), num_hidden_layers=3)


def _reference_logits(make_model, left_out):
    """Logits of a second copy of the model whose encoder loop skips ``left_out`` (its layer list edited)."""
    model = make_model()
    layers = modeling.encoder_layer(model)
    stack = layers.transformer.layer if hasattr(layers, "transformer") else layers.encoder.layer
    stack[:] = [layer for i, layer in enumerate(list(stack)) if i not in left_out]
    return model(INPUTS, training=False).logits.numpy()


def _layer_weights(model, index):
    return [w.numpy() for w in model.weights if f"/layer_._{index}/" in w.name]


@pytest.mark.parametrize("left_out", [[1], [0, 2], [2]])
def test_without_layers_computes_the_remaining_stack(three_layer_folder, left_out):
    import tensorflow as tf

    def make_model():
        tf.keras.utils.set_random_seed(0)  # the same new head in every copy
        return modeling.load_for_training(three_layer_folder, ["a", "b", "c"])

    model = make_model()
    smaller = layer_drop.without_layers(model, left_out)
    kept = [i for i in range(3) if i not in left_out]
    assert type(smaller) is type(model) and smaller.config.num_hidden_layers == len(kept)
    assert model.config.num_hidden_layers == 3  # the trained model is left as it was
    for new_index, old_index in enumerate(kept):
        for new, old in zip(_layer_weights(smaller, new_index), _layer_weights(model, old_index), strict=True):
            np.testing.assert_array_equal(new, old)
    np.testing.assert_allclose(smaller(INPUTS, training=False).logits.numpy(), _reference_logits(make_model, left_out),
                               atol=1e-6)
    assert not np.allclose(smaller(INPUTS).logits.numpy(), model(INPUTS).logits.numpy(), atol=1e-4)


@pytest.mark.parametrize("family", ["roberta", "electra", "distilbert"])
def test_other_families_lose_a_layer_the_same_way(family):
    smaller = layer_drop.without_layers(tiny_classifier(family), [0])
    assert smaller.config.num_hidden_layers == 1
    np.testing.assert_allclose(smaller(INPUTS, training=False).logits.numpy(),
                               _reference_logits(lambda: tiny_classifier(family), [0]), atol=1e-6)


def test_albert_shares_its_layers_so_none_is_left_out():
    albert = tiny_classifier("albert")
    assert layer_drop.droppable_layers(albert) == 0
    with pytest.raises(ValueError, match="share weights"):
        layer_drop.without_layers(albert, [0])
    choice = layer_drop.choose_layers_to_leave_out(albert, lambda model: 0.5, max_drop=1.0)
    assert choice.left_out == [] and choice.tried == []


def test_the_mlp_head_is_copied(three_layer_folder):
    import tensorflow as tf

    def make_model():
        tf.keras.utils.set_random_seed(0)
        return modeling.load_for_training(three_layer_folder, ["a", "b"], freeze_encoder=True, head_hidden_size=8)

    smaller = layer_drop.without_layers(make_model(), [2])
    assert smaller.classifier.get_layer("hidden").units == 8
    np.testing.assert_allclose(smaller(INPUTS, training=False).logits.numpy(), _reference_logits(make_model, [2]),
                               atol=1e-6)


def test_bad_layer_lists_are_refused(three_layer_folder):
    model = modeling.load_for_training(three_layer_folder, ["a", "b"])
    for left_out in ([0, 1, 2], [3], [1, 1]):
        with pytest.raises(ValueError, match="distinct layers of 0..2"):
            layer_drop.without_layers(model, left_out)


def test_the_search_leaves_out_layers_while_the_score_holds(three_layer_folder):
    model = modeling.load_for_training(three_layer_folder, ["a", "b"])
    # Which original layers a candidate kept, told by each layer's first query weight.
    signature = {float(_layer_weights(model, i)[0].flat[0]): i for i in range(3)}
    scores = {(): 0.90, (0,): 0.85, (1,): 0.899, (2,): 0.90, (0, 2): 0.89, (1, 2): 0.80, (0, 1): 0.95}

    def score(candidate):
        kept = {signature[float(_layer_weights(candidate, j)[0].flat[0])]
                for j in range(candidate.config.num_hidden_layers)}
        return scores[tuple(i for i in range(3) if i not in kept)]

    strict = layer_drop.choose_layers_to_leave_out(model, score, max_drop=0.005)
    assert strict.left_out == [2] and strict.score == 0.90 and strict.full_score == 0.90
    # Round one tries each layer, round two each remaining one on top of layer 2, then stops (0.89 < 0.895).
    assert [t["left_out"] for t in strict.tried] == [[0], [1], [2], [0, 2], [1, 2]]
    loose = layer_drop.choose_layers_to_leave_out(model, score, max_drop=0.02)
    assert loose.left_out == [0, 2] and loose.score == 0.89 and len(loose.tried) == 5  # one layer always stays
    scores[(0,)] = 0.90  # a tie with layer 2: the lower layer goes
    assert layer_drop.choose_layers_to_leave_out(model, score, max_drop=0.0).left_out[0] == 0


def test_small_validation_splits_cannot_pick_layers():
    assert layer_drop.unresolvable(676, 0.005) is None and layer_drop.unresolvable(200, 0.005) is None
    assert "199 validation examples" in layer_drop.unresolvable(199, 0.005)
    assert "needs 200 examples" in layer_drop.unresolvable(12, 0.005)
    assert layer_drop.unresolvable(12, 0.1) is None
