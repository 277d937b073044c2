import datasets
import numpy as np
import pytest
from transformers import AutoTokenizer

from tfbert.data.pipeline import bucket_boundaries, encode_batch, inference_dataset, tokenize, training_dataset


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_head_truncation_matches_the_tokenizer(tokenizer):
    texts = ["good " * 40, "bad item", ""]
    encoded = encode_batch(tokenizer, texts, None, max_length=16, truncation="head")
    assert encoded["input_ids"] == tokenizer(texts, truncation=True, max_length=16)["input_ids"]
    assert encoded["n_tokens"] == [42, 4, 2]
    for mode in ("head", "tail"):  # predictors skip the count; the ids stay the same
        uncounted = encode_batch(tokenizer, texts, None, max_length=16, truncation=mode, count_tokens=False)
        counted = encode_batch(tokenizer, texts, None, max_length=16, truncation=mode)
        assert "n_tokens" not in uncounted and uncounted == {k: v for k, v in counted.items() if k != "n_tokens"}


def test_tail_and_head_tail_keep_the_right_ends(tokenizer):
    words = ["good", "bad", "okay", "fine"] * 10  # 40 word tokens
    ids = tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]
    for mode, expected_body in (
        ("tail", ids[-14:]),
        ("head_tail", ids[:3] + ids[-11:]),  # a quarter head, the rest tail
    ):
        encoded = encode_batch(tokenizer, [" ".join(words)], None, max_length=16, truncation=mode)
        assert encoded["input_ids"][0] == [tokenizer.cls_token_id] + expected_body + [tokenizer.sep_token_id], mode
        assert encoded["attention_mask"][0] == [1] * 16


def test_pairs_are_truncated_to_max_length(tokenizer):
    encoded = encode_batch(tokenizer, ["good item"], ["bad " * 50], max_length=20, truncation="head_tail")
    assert len(encoded["input_ids"][0]) == 20
    assert encoded["token_type_ids"][0].count(0) == 4  # [CLS] good item [SEP]: the short text is kept whole


def test_buckets_cover_every_length():
    assert bucket_boundaries(128) == [16, 32, 48, 64, 80, 96, 112, 129]
    assert bucket_boundaries(512)[-1] == 513


def test_training_batches_are_shuffled_bucketed_and_complete(tokenizer):
    rng = np.random.default_rng(0)
    texts = [" ".join(["good"] * int(n)) for n in rng.integers(1, 60, size=100)]
    data = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": texts, "label": list(range(100))})})
    encoded = tokenize(data, tokenizer, max_length=64)["train"]
    batches = training_dataset(encoded, tokenizer, batch_size=8, seed=1)
    epochs = []
    for _ in range(2):
        seen, widths = [], []
        for features, labels in batches:
            mask = features["attention_mask"].numpy()
            widths.append(mask.shape[1])
            assert mask.sum(axis=1).max() == mask.shape[1]  # padded to the batch's longest only
            lengths = mask.sum(axis=1)
            assert lengths.max() - lengths.min() < 16 + 1  # one bucket per batch
            seen += labels.numpy().tolist()
        assert sorted(seen) == list(range(100))
        epochs.append(seen)
    assert epochs[0] != epochs[1]  # reshuffled each epoch


def test_pipelines_have_tf_data_autotuning_off(tokenizer):
    """tf.data's autotuning thread made deleting an iterator wait up to a minute (after fit and predict)."""
    data = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["good item"] * 40, "label": [0] * 40})})
    encoded = tokenize(data, tokenizer, max_length=16)["train"]
    training = training_dataset(encoded, tokenizer, batch_size=8, seed=1, repeat=True)
    inference = inference_dataset(encoded, tokenizer, batch_size=8)
    assert training.options().autotune.enabled is False and inference.options().autotune.enabled is False
    features, labels = next(iter(training))
    assert features["input_ids"].shape[0] == 8 == next(iter(inference))["input_ids"].shape[0]


def test_lengths_that_mostly_agree_still_vary(tokenizer):
    """Most texts cut at max_length, a few shorter: every batch must still come out (livedoor's shape)."""
    texts = ["good " * 50] * 40 + ["bad item"] * 3
    data = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": texts, "label": [0] * 40 + [1] * 3})})
    encoded = tokenize(data, tokenizer, max_length=16)["train"]
    labels = []
    for features, batch_labels in training_dataset(encoded, tokenizer, batch_size=8, seed=0):
        labels += batch_labels.numpy().tolist()
    assert sorted(labels) == [0] * 40 + [1] * 3


def test_batches_are_padded_to_a_multiple_of_16(tokenizer):
    texts = [" ".join(["good"] * n) for n in (3, 20, 35)] * 4
    data = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": texts, "label": [0, 1, 2] * 4})})
    encoded = tokenize(data, tokenizer, max_length=64)["train"]
    for features, _ in training_dataset(encoded, tokenizer, batch_size=4, seed=0, pad_multiple=16):
        width = features["input_ids"].shape[1]
        assert width % 16 == 0
        mask = features["attention_mask"].numpy()
        assert width - 16 < mask.sum(axis=1).max() <= width  # no more than 15 padding columns added
        assert (features["input_ids"].numpy()[mask == 0] == tokenizer.pad_token_id).all()
    from tfbert.data.pipeline import inference_dataset

    widths = [batch["input_ids"].shape[1] for batch in inference_dataset(encoded, tokenizer, batch_size=5, pad_multiple=16)]
    assert all(w % 16 == 0 for w in widths)


def test_tokenised_splits_are_cached_by_rows_tokenizer_and_settings(tokenizer, tmp_path):
    splits = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"text": ["good phone", "bad book"], "label": [1, 0]}),
        "test": datasets.Dataset.from_dict({"text": ["okay item"], "label": [1]}),
    })
    first = tokenize(splits, tokenizer, 16, cache_dir=str(tmp_path))
    cached = sorted(p.name for p in tmp_path.glob("*.arrow"))
    assert len(cached) == 2
    again = tokenize(splits, tokenizer, 16, cache_dir=str(tmp_path))
    assert again["train"].cache_files[0]["filename"] == first["train"].cache_files[0]["filename"]
    assert again["train"]["input_ids"] == first["train"]["input_ids"]
    assert sorted(p.name for p in tmp_path.glob("*.arrow")) == cached  # read back, nothing new written
    tokenize(splits, tokenizer, 8, cache_dir=str(tmp_path))  # other settings: other files
    relabelled = datasets.DatasetDict({"train": splits["train"].map(lambda row: {"label": 1 - row["label"]}),
                                       "test": splits["test"]})
    assert tokenize(relabelled, tokenizer, 16, cache_dir=str(tmp_path))["train"]["label"] == [0, 1]
    assert len(list(tmp_path.glob("*.arrow"))) == 5  # 2 + 2 at max_length 8 + the relabelled train split
