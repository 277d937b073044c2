"""In-graph length groups: the same outputs in the same order as one padded call, each group cut to its own
longest row, and the export's text signatures built on it."""

import numpy as np
import pytest
import tensorflow as tf

from tfbert.length_groups import in_length_groups

LENGTHS = [5, 2, 9, 3, 3, 12, 1, 7, 4, 10, 2, 6, 8]  # shuffled, mixed; 13 rows: groups of 4 leave one of 1


def padded_batch(lengths, width=None, seed=0):
    rng = np.random.default_rng(seed)
    width = width or max(lengths)
    mask = np.array([[1] * n + [0] * (width - n) for n in lengths], np.int64)
    ids = rng.integers(5, 40, size=mask.shape) * mask
    types = (rng.integers(0, 2, size=mask.shape) * mask).astype(np.int64)
    return ids, mask, types


def masked_mean_classifier():
    """A per-row function whose answer moves with every token: embeddings mean-pooled under the mask."""
    table = tf.constant(np.random.default_rng(1).normal(size=(40, 3)), tf.float32)
    labels = tf.constant(["a", "b", "c"])

    def classify(input_ids, attention_mask, token_type_ids):
        mask = tf.cast(attention_mask, tf.float32)[..., tf.newaxis]
        pooled = tf.reduce_sum(tf.gather(table, input_ids) * mask, 1) / tf.reduce_sum(mask, 1)
        pooled += tf.cast(tf.reduce_sum(token_type_ids, 1, keepdims=True), tf.float32)
        probabilities = tf.nn.softmax(pooled)
        label_id = tf.argmax(probabilities, -1)
        return {"probabilities": probabilities, "label_id": label_id, "label": tf.gather(labels, label_id),
                "width": tf.fill([tf.shape(input_ids)[0]], tf.shape(input_ids)[1])}

    return classify


@pytest.mark.parametrize("group_rows", [1, 4, 8, 32])
def test_groups_give_the_outputs_of_one_padded_call_in_the_same_order(group_rows):
    classify = masked_mean_classifier()
    ids, mask, types = padded_batch(LENGTHS, width=16)
    whole = classify(ids, mask, types)
    grouped = tf.function(lambda *x: in_length_groups(classify, *x, group_rows=group_rows))(ids, mask, types)
    np.testing.assert_allclose(grouped["probabilities"].numpy(), whole["probabilities"].numpy(), atol=1e-6)
    assert grouped["label_id"].numpy().tolist() == whole["label_id"].numpy().tolist()
    assert grouped["label"].numpy().tolist() == whole["label"].numpy().tolist()
    # Each row ran padded to the longest row of its group of sorted rows, never to the batch's 16.
    ranks = np.argsort(np.argsort(LENGTHS, kind="stable"), kind="stable")
    ordered = sorted(LENGTHS)
    expected_width = [ordered[min((rank // group_rows + 1) * group_rows, len(LENGTHS)) - 1] for rank in ranks]
    assert grouped["width"].numpy().tolist() == expected_width


def test_one_row_and_equal_lengths():
    classify = masked_mean_classifier()
    call = tf.function(lambda *x: in_length_groups(classify, *x, group_rows=4))
    for lengths in ([6], [3, 3, 3, 3, 3, 3]):
        ids, mask, types = padded_batch(lengths, seed=len(lengths))
        np.testing.assert_allclose(call(ids, mask, types)["probabilities"].numpy(),
                                   classify(ids, mask, types)["probabilities"].numpy(), atol=1e-6)


@pytest.mark.slow  # exports a model
def test_export_text_signature_equals_the_unsorted_ids_signature(tiny_model_dir, tmp_path):
    """serving_default (groups of sorted rows) against predict_ids (one call padded to the longest) on a
    shuffled batch of mixed lengths, longer than one group."""
    from tfbert import modeling
    from tfbert.export import export_saved_model
    from tfbert.length_groups import GROUP_ROWS

    model = modeling.load_for_training(tiny_model_dir, ["neg", "neu", "pos"])
    tokenizer = modeling.load_tokenizer(tiny_model_dir)
    version = export_saved_model(model, tokenizer, id2label={0: "neg", 1: "neu", 2: "pos"}, max_length=24,
                                 base_dir=tmp_path)
    rng = np.random.default_rng(0)
    words = "the phone is great but a really awful book was happy and broken".split()
    texts = [" ".join(rng.choice(words, size=n)) for n in rng.integers(1, 30, size=3 * GROUP_ROWS + 3)]
    loaded = tf.saved_model.load(str(version))
    grouped = loaded.signatures["serving_default"](text=tf.constant(texts))
    encoded = tokenizer(texts, padding=True, truncation=True, max_length=24, return_tensors="np")
    whole = loaded.signatures["predict_ids"](**{key: tf.constant(encoded[key], tf.int64) for key in
                                                ("input_ids", "attention_mask", "token_type_ids")})
    assert len(set(encoded["attention_mask"].sum(1))) > 5  # mixed lengths, in no order
    np.testing.assert_allclose(grouped["probabilities"].numpy(), whole["probabilities"].numpy(), atol=1e-5)
    for key in ("label_id", "label", "label_names"):
        assert grouped[key].numpy().tolist() == whole[key].numpy().tolist()
    pairs = loaded.signatures["predict_text_pair"](text=tf.constant(texts), text_pair=tf.constant(texts[::-1]))
    encoded = tokenizer(texts, texts[::-1], padding=True, truncation=True, max_length=24, return_tensors="np")
    whole = loaded.signatures["predict_ids"](**{key: tf.constant(encoded[key], tf.int64) for key in
                                                ("input_ids", "attention_mask", "token_type_ids")})
    np.testing.assert_allclose(pairs["probabilities"].numpy(), whole["probabilities"].numpy(), atol=1e-5)
