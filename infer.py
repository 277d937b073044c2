"""Label texts with a trained model: python infer.py "text one" "text two" [--model RUN] [--top_k 3] [--json]"""

import tfbert  # noqa: F401  (sets the environment before TensorFlow loads)
from tfbert.cli import exit_now, parse_infer_args, run_main, setup_logging


def main() -> int:
    import json
    import logging
    from pathlib import Path

    from tfbert import inputs, runtime, tasks
    from tfbert.errors import TfbertError

    config = parse_infer_args()
    setup_logging(quiet=True, verbose=config.verbose)
    texts, pairs = inputs.collect_inputs(config)
    model_path = None
    if not config.server:
        from tfbert.model_choice import choose_export
        from tfbert.runs import newest_run

        # Chosen from the run's JSON files before anything heavy loads: a compact export needs no TensorFlow.
        model_path = Path(config.model) if config.model else newest_run(config.output_dir)
        choice = choose_export(model_path, explain=config.explain)
        logging.getLogger("infer").info("answering with %s: %s", choice.path, choice.reason)
    runtime.quiet_libraries()
    if not config.server and choice.kind != "compact":
        # model/ imports Keras when it loads; --explain takes gradients, whose MatMuls have no fixed weights.
        runtime.import_tensorflow(config.verbose, keras=False, frozen_weights=not config.explain)
        runtime.optimise_graphs_for(len(texts))
    from tfbert.predictors import load_predictor

    predictor = load_predictor(None if config.server else str(choice.path), config.output_dir, config.server)
    if model_path is not None:
        inputs.check_pairs(model_path, pairs)
    if config.explain:
        from tfbert import attributions

        tasks.require(getattr(predictor, "task", "single_label"), ("single_label",), "--explain")
        if getattr(predictor, "stride", None) is not None:
            raise TfbertError("--explain shows one window's tokens; this model reads long texts in windows "
                              "(--long_text window): drop --explain")

        why = attributions.explain_predictor(predictor, texts, pairs)
    else:
        why = None
    probabilities = predictor.predict(texts, pairs)
    labels, task = predictor.labels, getattr(predictor, "task", "single_label")  # a server's: known after predict
    k = min(config.top_k, len(labels))
    for i, (text, row) in enumerate(zip(texts, probabilities)):
        if task != "single_label":  # a label set with its probabilities, or a score
            result = tasks.answer(task, labels, predictor.thresholds, row)
            print(json.dumps({"text": text, **result}, ensure_ascii=False) if config.json
                  else f"{tasks.answer_text(result)}\t{text}")
            continue
        best = row.argsort()[::-1][:k]
        if config.json:
            answer = {"text": text, **({"text_pair": pairs[i]} if pairs else {}), "label": labels[best[0]],
                      "confidence": round(float(row[best[0]]), 6),
                      "top_k": [{"label": labels[j], "probability": round(float(row[j]), 6)} for j in best],
                      **({"explanation": why[i].to_dict()} if why else {})}
            print(json.dumps(answer, ensure_ascii=False))
        else:
            ranked = "  ".join(f"{labels[j]} {row[j]:.3f}" for j in best)
            print(f"{ranked}\t{text}" + (f"\n  why {labels[why[i].target]}: {why[i].describe()}" if why else ""))
    return 0


if __name__ == "__main__":
    exit_now(run_main(main))
