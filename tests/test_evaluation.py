import numpy as np
import pytest

from tfbert.evaluation import evaluate_predictions


def test_metrics_match_hand_computation():
    probabilities = np.array([
        [0.8, 0.1, 0.1],  # gold 0, right
        [0.1, 0.7, 0.2],  # gold 0, wrong -> 1 (conf 0.7)
        [0.2, 0.5, 0.3],  # gold 1, right
        [0.05, 0.05, 0.9],  # gold 1, wrong -> 2 (conf 0.9)
        [0.1, 0.1, 0.8],  # gold 2, right
        [0.3, 0.3, 0.4],  # gold 2, right
    ])
    labels = np.array([0, 0, 1, 1, 2, 2])
    result = evaluate_predictions(probabilities, labels, ["a", "b", "c"], texts=list("uvwxyz"),
                                  row_ids=[10, 11, 12, 13, 14, 15], top_errors=5)
    m = result.metrics
    assert m["accuracy"] == pytest.approx(4 / 6)
    # per class: a P=1 R=.5 F=2/3; b P=.5 R=.5 F=.5; c P=2/3 R=1 F=.8
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 0.8) / 3)
    assert m["macro_precision"] == pytest.approx((1 + 0.5 + 2 / 3) / 3)
    assert m["loss"] == pytest.approx(-np.mean(np.log([0.8, 0.1, 0.5, 0.05, 0.8, 0.4])))
    assert result.confusion == [[1, 1, 0], [0, 1, 1], [0, 0, 2]]
    assert [e["row_id"] for e in result.errors] == [13, 11]  # most confident first
    assert result.errors[0] == {
        "row_id": 13, "text": "x", "label": "b", "predicted": "c", "confidence": 0.9,
        "probabilities": {"a": 0.05, "b": 0.05, "c": 0.9},
    }
    assert "a" in result.report and "macro avg" in result.report


def test_absent_class_still_reported():
    result = evaluate_predictions(np.array([[0.9, 0.1, 0.0]]), np.array([0]), ["x", "y", "z"])
    assert result.confusion == [[1, 0, 0], [0, 0, 0], [0, 0, 0]]
    assert result.metrics["accuracy"] == 1.0


def test_validation_passes_keep_each_epochs_outputs_for_the_final_evaluation(tiny_model_dir):
    """The final evaluation reuses the best epoch's validation outputs: they must be what the model predicts with
    that epoch's weights, and a resumed run's epochs before its backup (not validated by this process) have none.
    The warm-up traces the prediction function the passes then use, and is not a pass."""
    import datasets

    from conftest import make_rows
    from tfbert.data.pipeline import tokenize
    from tfbert.evaluation import predict_probabilities
    from tfbert.modeling import load_for_training, load_tokenizer
    from tfbert.task_metrics import ValidationPasses

    rows = make_rows(24)
    labels = sorted({row["label"] for row in rows})
    tokenizer = load_tokenizer(tiny_model_dir)
    split = datasets.Dataset.from_list([{**row, "label": labels.index(row["label"])} for row in rows])
    encoded = tokenize(datasets.DatasetDict({"validation": split}), tokenizer, 16)["validation"]
    model = load_for_training(tiny_model_dir, labels)
    passes = ValidationPasses(model, encoded, tokenizer, labels, batch_size=8)
    passes.warm_up()
    assert passes.outputs == [] and model.predict_function.experimental_get_tracing_count() == 1
    weights = []
    for epoch in range(3):  # a resumed run: this process validates epochs 2, 3 and 4 of 4
        model.set_weights([w + 0.05 * np.sin(np.arange(w.size) + epoch).reshape(w.shape) for w in model.get_weights()])
        weights.append(model.get_weights())
        metrics = passes()
        assert set(metrics) >= {"macro_f1", "accuracy"}
    assert model.predict_function.experimental_get_tracing_count() == 1
    assert passes.outputs_of(epoch=1, epochs_run=4) is None
    for epoch in (2, 3, 4):
        model.set_weights(weights[epoch - 2])
        again = predict_probabilities(model, encoded, tokenizer, batch_size=8)
        np.testing.assert_allclose(passes.outputs_of(epoch=epoch, epochs_run=4), again, atol=1e-6)
    assert not np.allclose(passes.outputs_of(epoch=2, epochs_run=4), passes.outputs_of(epoch=4, epochs_run=4))
