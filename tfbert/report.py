"""report.md: the human summary of a run, linking its figures."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tfbert import runs

METRIC_NAMES = {"macro_f1": "macro-F1", "pearson": "Pearson r"}  # the compact export's metric, as the report names it
_ROWS = (("accuracy", "accuracy"), ("macro_f1", "macro F1"), ("macro_precision", "macro precision"),
         ("macro_recall", "macro recall"), ("weighted_f1", "weighted F1"), ("micro_f1", "micro F1"),
         ("samples_f1", "samples F1"), ("subset_accuracy", "subset accuracy"), ("hamming_loss", "Hamming loss"),
         ("pearson", "Pearson r"), ("spearman", "Spearman ρ"), ("mse", "MSE"), ("mae", "MAE"), ("loss", "loss"))


def write_report(run: runs.Run, config, corpus, metrics: dict, evaluations: dict, figures: dict[str, Path],
                 saved_model: Path, policy: str, train_lengths: np.ndarray) -> Path:
    """Write run.path/report.md: data, settings, scores, per-class report, errors, figures."""
    data, settings, task = config.data, config.training, getattr(corpus, "task", "single_label")
    overlap = corpus.overlap
    lines = [
        f"# {corpus.name} · {config.model.model_name}",
        "",
        f"Run `{run.run_id}`: {task.replace('_', '-')} task; best epoch {metrics['best_epoch']} of "
        f"{metrics['epochs_run']} by validation {'Pearson r' if task == 'regression' else 'macro-F1'}; "
        f"trained {metrics['train_seconds']:.0f} s ({metrics['train_examples_per_second']:.1f} examples/s), "
        f"precision `{policy}`." + (f" Run folder and figures: {metrics['run_mib']:.1f} MiB." if "run_mib" in metrics
                                     else ""),
        "",
        *_warning_lines(metrics.get("warnings", [])),
        "## Scores",
        "",
        "| metric | validation | test |",
        "|---|---|---|",
    ]
    for key, name in ((key, name) for key, name in _ROWS if key in metrics["test"]):
        lines.append(f"| {name} | {metrics['validation'][key]:.4f} | {metrics['test'][key]:.4f} |")
    if "baseline" in metrics:  # the floor the model has to beat to earn its cost
        floor = metrics["baseline"]
        lines.append(f"| baseline macro F1 (TF-IDF + logistic regression, {floor['analyzer']}) | "
                     f"{floor['validation']['macro_f1']:.4f} | {floor['test']['macro_f1']:.4f} |")
    lines += ["", "## Data", "", "| split | examples | source |", "|---|---|---|"]
    for split, size in corpus.sizes().items():
        lines.append(f"| {split} | {size} | {corpus.sources[split]} |")
    made = corpus.split_record.get("made", {})
    lines += [
        "",
        f"Labels: {', '.join(corpus.label_names)}. "
        + (f"Splits made here (seed {corpus.split_record['seed']}): "
           + "; ".join(f"{k}: {v}" for k, v in made.items()) + ". " if made else "")
        + "Row ids per split are in `splits.json`.",
        "",
        f"Overlap (after NFKC, case and space normalisation): {overlap.get('train_duplicates', 0)} duplicate texts in train, "
        f"{overlap.get('validation_in_earlier_splits', 0)} validation and {overlap.get('test_in_earlier_splits', 0)} "
        "test texts also in an earlier split"
        + (" — removed (--dedupe)." if overlap.get("deduplicated") else
           (". Scores on overlapping texts flatter the model; rerun with --dedupe to remove them."
            if overlap.get("test_in_earlier_splits", 0) or overlap.get("validation_in_earlier_splits", 0) else ".")),
        "",
        *_unknown_token_lines(metrics.get("data_checks", {}).get("unknown_token_share", {})),
        f"Length: median {int(np.median(train_lengths))} tokens, 95th percentile {int(np.percentile(train_lengths, 95))}; "
        f"{float((train_lengths > data.max_length).mean()):.1%} of training texts "
        + (f"over --max_length {data.max_length}, read whole in windows (--long_text window --stride {data.stride}, "
           f"--window_pool {data.window_pool})." if data.long_text == "window" else
           f"truncated at --max_length {data.max_length} (--truncation {data.truncation})."),
        "",
        "## Per class (test)" if task == "single_label" else "## Per label (test)",
        "",
        "```",
        evaluations["test"].report.rstrip(),
        "```",
        "",
        "## Most confident errors (test)",
        "",
    ]
    errors = evaluations["test"].errors[:10]
    if errors:
        sure = {"single_label": "confidence", "multi_label": "most confident wrong decision"}.get(task, "|error|")
        lines += [f"| true | predicted | {sure} | text |", "|---|---|---|---|"]
        for error in errors:
            text = error["text"].replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {error['label']} | {error['predicted']} | {error['confidence']:.3f} | "
                         f"{text[:160]}{'…' if len(text) > 160 else ''} |")
        lines.append(f"\nAll listed in `errors.jsonl` (top {settings.top_errors}).")
    else:
        lines.append("None: every test example was classified correctly.")
    lines += ["", "## Figures", ""]
    for name, path in figures.items():
        lines.append(f"![{name}]({os.path.relpath(path, run.path)})")
    lines += [
        "",
        "## Files",
        "",
        ("- `model/`: Keras 3 classifier (model.weights.h5, keras_classifier.json, config, tokenizer)"
         if (run.model_dir / "keras_classifier.json").is_file() else
         "- `model/`: save_pretrained folder (tf_model.h5, config, tokenizer)") + f" — `python infer.py --model {run.path}`",
        f"- `{os.path.relpath(saved_model, run.path)}/`: SavedModel for TF Serving (base path "
        f"`{run.saved_model_base}`)",
        *([_compact_line(metrics["compact"], run)] if "mib" in metrics.get("compact", {}) else []),
        "- `config.json` (every setting, versions, data fingerprint), `log.csv`, `metrics.json`, "
        "`classification_report.txt`, `errors.jsonl`, `predictions_*.jsonl`, `tensorboard/`",
        "",
    ]
    path = run.path / "report.md"
    runs.write_text(path, "\n".join(lines))
    return path


def _warning_lines(warnings: list[str]) -> list[str]:
    """A Warnings section for what the data checks found (nothing when all is well)."""
    if not warnings:
        return []
    return ["## Warnings", "", *(f"- ⚠ {warning}" for warning in warnings), ""]


def _unknown_token_lines(shares: dict[str, float]) -> list[str]:
    if not shares:
        return []
    return ["Unknown tokens (the model's unknown token among all but special tokens): "
            + ", ".join(f"{split} {share:.1%}" for split, share in shares.items()) + ".", ""]


def _compact_line(compact: dict, run) -> str:
    """The Files entry of compact/: size, encoder layers kept, the task's test metric against the model's."""
    metric = compact.get("metric", "macro_f1")  # entries written before other tasks had one: macro-F1
    name = METRIC_NAMES.get(metric, metric)
    layers = ""
    if compact.get("left_out_layers"):
        search, left_out = compact["layer_search"], compact["left_out_layers"]
        layers = (f", {compact['encoder_layers']} of {compact['encoder_layers'] + len(left_out)} encoder layers "
                  f"(left out: {', '.join(map(str, left_out))}; validation {name} "
                  f"{search[f'validation_{metric}']:.4f} vs {search[f'validation_{metric}_full']:.4f} with all)")
    return (f"- `compact/`: TFLite with int8 weights ({compact['mib']} MiB){layers}, test {name} "
            f"{compact[f'test_{metric}']:.4f} ({compact[f'test_{metric}_change']:+.4f} vs the model) — "
            f"`python infer.py --model {run.compact_dir}`")
