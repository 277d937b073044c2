"""Leaving whole encoder layers out of a fine-tuned classifier, for the compact export.

Every layer left out takes its share of the work off each prediction; what it costs depends on the
layer and the task, so it is measured, not assumed (Sajjad et al., "On the effect of dropping layers of
pre-trained transformer models", 2023, drop layers before fine-tuning; here they are chosen after it).
:func:`choose_layers_to_leave_out` finds such layers greedily, one per round, scoring each candidate model
with a caller's function (train.py: the float32 model's validation macro-F1, or Pearson r for regression) and
stopping before the score falls more than a budget below the full model's. Measured with all-MiniLM-L6-v2
fine-tuned on AG News: leaving out layer 3 of 6 moved validation macro-F1 0.9021 -> 0.9050 and the int8
export's test macro-F1 0.9044 -> 0.9024; every second layer cost 0.008-0.06 on validation.
:func:`export_compact` is train.py's compact export: the search (--compact_layers), the TFLite conversion and
the test score.

Example:
    >>> smaller = without_layers(model, [3])  # doctest: +SKIP
    >>> smaller.config.num_hidden_layers  # doctest: +SKIP
    5
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from tfbert.keras_serving import is_keras3_classifier
from tfbert.runtime import returning_freed_memory

if TYPE_CHECKING:
    from tfbert.config import TrainConfig, TrainingConfig
    from tfbert.runs import Run

logger = logging.getLogger(__name__)

# transformers names the i-th encoder layer ".../layer_._{i}/..." in BERT, RoBERTa, XLM-R, ELECTRA and
# DistilBERT; ALBERT's layers share one set of weights and have no such names.
_LAYER_INDEX = re.compile(r"/layer_\._(\d+)/")


@dataclass
class KerasLayersLeftOut:
    """A Keras 3 classifier without some encoder layers: keras-hub's layers are skipped when it is called or
    traced inside tfbert.keras_serving.serving_rewrites(model, left_out=...), not removed from the model."""

    model: Any
    left_out: list[int]


def droppable_layers(model) -> int:
    """How many encoder layers have weights of their own (so that any of them can be left out); 0 if none do."""
    if is_keras3_classifier(model):
        from tfbert.keras_serving import encoder_layers

        return len(encoder_layers(model))
    indices = {int(match.group(1)) for weight in model.weights if (match := _LAYER_INDEX.search(weight.name))}
    return len(indices) if indices == set(range(model.config.num_hidden_layers)) else 0


def _own_name(weight, model) -> str:
    """A weight's name without its model's scope (``tf_bert_for_sequence_classification_1/``) and ``:0``."""
    return weight.name.removeprefix(model.name + "/").rsplit(":", 1)[0]


def without_layers(model, left_out: Sequence[int]):
    """A new classifier of the same class whose encoder skips the layers ``left_out`` (0-based); for a Keras 3
    classifier, a :class:`KerasLayersLeftOut` view of it.

    Every other weight (embeddings, kept layers in order, pooler, head, an MLP head too) is copied, so the
    new model computes what the old one computes with those layers removed from the residual stack.
    """
    import tensorflow as tf

    n_layers = droppable_layers(model)
    if not n_layers:
        raise ValueError(f"{type(model).__name__}: its encoder layers share weights; none can be left out")
    requested, left_out = list(left_out), set(left_out)
    kept = [i for i in range(n_layers) if i not in left_out]
    if not kept or len(left_out) != len(requested) or not left_out <= set(range(n_layers)):
        raise ValueError(f"left_out={requested}: give distinct layers of 0..{n_layers - 1}, keeping one at least")
    if is_keras3_classifier(model):
        return KerasLayersLeftOut(model, sorted(left_out))
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = len(kept)
    smaller = type(model)(config)
    smaller(smaller.dummy_inputs, training=False)
    if isinstance(getattr(model, "classifier", None), tf.keras.Sequential):  # the MLP head of --head_hidden_size
        from tfbert.modeling import set_mlp_head

        set_mlp_head(smaller, model.classifier.get_layer("hidden").units)
    # Same class, same construction: the weights come in the same order, the left-out layers' missing.
    remaining = [weight for weight in model.weights if not (
        (match := _LAYER_INDEX.search(weight.name)) and int(match.group(1)) in left_out)]
    for new, old in zip(smaller.weights, remaining, strict=True):
        name = _LAYER_INDEX.sub(lambda match: f"/layer_._{kept[int(match.group(1))]}/", _own_name(new, smaller))
        if name != _own_name(old, model):
            raise ValueError(f"{type(model).__name__}: weight {name} of the smaller model met {old.name}")
        new.assign(old)
    return smaller


def unresolvable(n_examples: int, max_drop: float) -> Optional[str]:
    """Why ``n_examples`` cannot tell a macro-F1 change of ``max_drop`` from noise (None if they can): one changed
    answer moves macro-F1 by about 1/n.

    Example:
        >>> unresolvable(676, 0.005) is None
        True
    """
    if n_examples * max_drop >= 1:
        return None
    return (f"{n_examples} validation examples cannot resolve a macro-F1 change of {max_drop} "
            f"(one answer moves it by ~{1 / max(n_examples, 1):.3f}; needs {math.ceil(1 / max_drop)} examples)")


@dataclass
class LayerChoice:
    """What :func:`choose_layers_to_leave_out` found: the layers to leave out and every score it measured."""

    n_layers: int
    left_out: list[int]
    full_score: float
    score: float  # of the model without ``left_out``
    tried: list[dict] = field(default_factory=list)  # {"left_out": [...], "score": x} in the order measured


def choose_layers_to_leave_out(model, score: Callable[[object], float], max_drop: float) -> LayerChoice:
    """Greedily leave out the layer whose removal scores best, while the score stays within ``max_drop`` of the
    full model's; one layer always stays. ``score(model)`` is higher-is-better (e.g. validation macro-F1).

    Each round scores every remaining layer's removal on top of the layers already left out; ties go to
    the lower layer. Models whose layers share weights (ALBERT) keep them all.
    """
    n_layers = droppable_layers(model)
    full_score = score(model)
    choice = LayerChoice(n_layers=n_layers, left_out=[], full_score=full_score, score=full_score)
    while n_layers - len(choice.left_out) > 1:
        round_scores = []
        for layer in range(n_layers):
            if layer in choice.left_out:
                continue
            candidate = sorted(choice.left_out + [layer])
            candidate_score = score(without_layers(model, candidate))
            choice.tried.append({"left_out": candidate, "score": candidate_score})
            round_scores.append((candidate_score, -layer))
            logger.info("compact export: without layers %s: %.4f (full model %.4f)", candidate, candidate_score,
                        full_score)
        best_score, best_layer = max(round_scores)
        if full_score - best_score > max_drop:
            break
        choice.left_out = sorted(choice.left_out + [-best_layer])
        choice.score = best_score
    return choice


def leave_out_layers(model, score: Callable[[object], float], n_validation: int, settings: "TrainingConfig",
                     metric: str = "macro_f1") -> tuple[object, list[int], dict]:
    """The compact export's model: without the encoder layers the validation split can spare (--compact_layers
    auto, within --compact_max_f1_drop of ``metric``), the layers it left out, and what the search measured (empty
    with --compact_layers all; ``{"skipped": why}`` when it cannot search).

    Example:
        >>> smaller, left_out, search = leave_out_layers(model, validation_f1, 676, config.training)  # doctest: +SKIP
        >>> left_out  # doctest: +SKIP
        [3]
    """
    if settings.compact_layers == "all":
        return model, [], {}
    # A correlation moves smoothly with every score; an F1 by whole answers, which a small split cannot resolve.
    skipped = unresolvable(n_validation, settings.compact_max_f1_drop) if metric.endswith("f1") else None
    if not skipped and droppable_layers(model) < 2:
        skipped = f"{model.name if is_keras3_classifier(model) else type(model).__name__} has no two encoder layers with " \
                  "weights of their own"
    if skipped:
        logger.info("compact export keeps every layer: %s", skipped)
        return model, [], {"skipped": skipped}
    started = time.time()
    choice = choose_layers_to_leave_out(model, score, settings.compact_max_f1_drop)
    logger.info("compact export: leaves out encoder layers %s of %d (validation %s %.4f, full model %.4f)",
                choice.left_out, choice.n_layers, metric, choice.score, choice.full_score)
    search = {
        "max_f1_drop": settings.compact_max_f1_drop, f"validation_{metric}_full": round(choice.full_score, 4),
        f"validation_{metric}": round(choice.score, 4), "seconds": round(time.time() - started, 1),
        "tried": [{"left_out": t["left_out"], f"validation_{metric}": round(t["score"], 4)} for t in choice.tried],
    }
    if choice.left_out:
        model = without_layers(model, choice.left_out)
    return model, choice.left_out, search


@returning_freed_memory  # the models and converter graphs of the layer search and the conversion
def export_compact(run: "Run", prepared: Any, config: "TrainConfig", *, model_test: dict) -> dict:
    """train.py's compact export of either backend's model/ (:func:`write_compact`): metrics.json's ``compact``
    entry, or ``{"error": why}`` when the conversion failed (the model and the SavedModel are written: the run is
    kept).

    Example:
        >>> export_compact(run, prepared, config, model_test={"macro_f1": 0.90})["metric"]  # doctest: +SKIP
        'macro_f1'
    """
    from tfbert.errors import TfbertError

    try:
        return write_compact(run, prepared, config, model_test=model_test)
    except TfbertError as error:
        logger.warning("no compact export: %s", error)
        return {"error": str(error)}


def write_compact(run: "Run", prepared: Any, config: "TrainConfig", *, model_test: dict) -> dict:
    """Write ``run.compact_dir`` (TFLite int8) from the run's saved model folder, leaving out the encoder layers
    the validation split can spare by the task's metric (macro-F1, Pearson r for regression), and measure that
    metric on the test split against the model's (``model_test``: its test metrics); return metrics.json's
    ``compact`` entry. The export answers with model/'s settings: its thresholds, its windows.
    ``prepared`` is the run's tfbert.experiment.Prepared (encoded splits, tokenizer, labels).
    A Keras 3 run's model folder (tfbert.keras_backend.save's files) goes through export_keras.export_tflite_keras,
    its layers left out at trace time.

    Example:
        >>> entry = write_compact(run, prepared, config, model_test={"macro_f1": 0.90})  # doctest: +SKIP
        >>> entry["metric"], entry["test_macro_f1_change"]  # doctest: +SKIP
        ('macro_f1', -0.002)
    """
    from tfbert import fused_ops, modeling, runtime, tasks
    from tfbert.evaluation import predict_probabilities
    from tfbert.export_keras import is_keras3_folder
    from tfbert.export_tflite import MODEL_FILE, export_tflite
    from tfbert.model_choice import answer_agreement, record_agreement
    from tfbert.model_settings import ModelSettings
    from tfbert.predictors import TFLitePredictor
    from tfbert.runs import folder_bytes
    from tfbert.task_metrics import evaluate_task

    started = time.time()
    batch_size, label_names = config.training.batch_size, prepared.label_names
    model_settings = ModelSettings.read(run.model_dir)
    task, thresholds = model_settings.task, model_settings.thresholds
    metric = tasks.monitor(task).removeprefix("val_")
    runtime.set_precision("float32")  # dynamic-range quantisation starts from the float32 weights
    keras3 = is_keras3_folder(run.model_dir)
    if keras3:
        import keras

        from tfbert import keras_backend
        from tfbert.export_keras import export_tflite_keras, keras_probabilities
        from tfbert.keras_serving import serving_rewrites

        keras.mixed_precision.set_global_policy("float32")
        model = keras_backend.load(run.model_dir)
    else:
        model = modeling.load_classifier(run.model_dir)

    def score(outputs, split: str) -> float:
        """The task's metric of ``outputs`` on ``split``, at the model's own thresholds (those the export ships)."""
        return evaluate_task(task, outputs, prepared.labels(split), label_names, thresholds).metrics[metric]

    def validation_score(candidate) -> float:
        split = prepared.encoded["validation"]
        if not keras3:
            return score(predict_probabilities(candidate, split, prepared.tokenizer, batch_size * 2, task,
                                               model_settings.window_pool), "validation")
        view = candidate if isinstance(candidate, KerasLayersLeftOut) else KerasLayersLeftOut(candidate, [])
        with serving_rewrites(view.model, left_out=view.left_out):
            return score(keras_probabilities(view.model, split, prepared.tokenizer, batch_size * 2), "validation")

    model, left_out, layer_search = leave_out_layers(model, validation_score, len(prepared.encoded["validation"]),
                                                     config.training, metric)
    if keras3:  # the serving rewrites (2-D projections, first-token last layer) are applied while it is traced
        model = model.model if isinstance(model, KerasLayersLeftOut) else model
        n_layers = droppable_layers(model) - len(left_out) or None  # None: ALBERT's shared layers, not counted
        folder = export_tflite_keras(model, prepared.tokenizer, model_settings, run.compact_dir,
                                     left_out_layers=left_out)
    else:
        # 2-D Dense and tf.nn.gelu convert to FULLY_CONNECTED and TFLite's GELU: 6-8 % more texts/s on AG News.
        fused_ops.fuse(model, for_serving=True)
        n_layers = model.config.num_hidden_layers
        folder = export_tflite(model, prepared.tokenizer, model_settings, run.compact_dir, left_out_layers=left_out)
    outputs = TFLitePredictor(folder).predict_encoded(prepared.encoded["test"])  # windows pooled, as infer.py does
    test_score = score(outputs, "test")
    # How often it answers as model/ did on the test split (its predictions file): infer.py's choice of export.
    predictions = (run.path / "predictions_test.jsonl").read_text(encoding="utf-8").splitlines()
    agreement = answer_agreement(task, outputs, [json.loads(line)["predicted"] for line in predictions], label_names,
                                 thresholds)
    record_agreement(folder, agreement)
    size = (folder / MODEL_FILE).stat().st_size
    return {"format": "tflite dynamic-range int8", "path": str(folder.relative_to(run.path) / MODEL_FILE),
            "encoder_layers": n_layers, "left_out_layers": left_out,
            **({"layer_search": layer_search} if layer_search else {}),
            "mib": round(size / 2**20, 2), "size_vs_saved_model": round(size / folder_bytes(run.saved_model_base), 3),
            "metric": metric, f"test_{metric}": test_score,
            f"test_{metric}_change": round(test_score - model_test[metric], 4),
            "test_label_agreement": agreement, "seconds": round(time.time() - started, 1)}
