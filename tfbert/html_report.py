"""report.html: one self-contained page per run (figures as base64 PNG data URIs, CSS inline, no script, no network)
that opens in any browser; :func:`render_html` builds such a page from any command's own data (evaluation, sweep).

Every headline number carries ``data-metric="<split>.<name>"`` (e.g. ``test.macro_f1``) and reads as
:func:`format_metric` of that entry of metrics.json, so a test can hold the page to the file.

Example:
    >>> page = render_html("demo", {"test": {"macro_f1": 0.91234}})
    >>> '<td data-metric="test.macro_f1">0.9123</td>' in page
    True
"""

from __future__ import annotations

import base64
import json
import logging
from html import escape
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from tfbert import runs

logger = logging.getLogger(__name__)

HEADLINE = (("accuracy", "accuracy"), ("macro_f1", "macro F1"), ("macro_precision", "macro precision"),
            ("macro_recall", "macro recall"), ("weighted_f1", "weighted F1"), ("micro_f1", "micro F1"),
            ("samples_f1", "samples F1"), ("subset_accuracy", "subset accuracy"), ("hamming_loss", "Hamming loss"),
            ("pearson", "Pearson r"), ("spearman", "Spearman ρ"), ("mse", "MSE"), ("mae", "MAE"), ("loss", "loss"))
SPLITS = ("validation", "test")
EXPLAINED_ERRORS, EXPLAINED_CORRECT = 3, 3  # a handful: each costs ~50 forward and backward passes

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1100px;
padding:1.5em;color:#1d2330;background:#fff}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #dde;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #dde;padding:.25em .6em;text-align:right}
th{background:#f3f5f9}td.text,th.text{text-align:left;max-width:560px}
.muted{color:#667}.warn{background:#fff4e0;border-left:4px solid #f0a000;padding:.5em 1em;margin:.4em 0}
.cards{display:flex;flex-wrap:wrap;gap:.8em}.card{border:1px solid #dde;border-radius:8px;padding:.6em 1em}
.card .value{font-size:1.6em;font-weight:600}.better{color:#17803d}.worse{color:#b42318}
img{max-width:100%;height:auto;border:1px solid #eee}figure{margin:.6em 0}
.tokens span{border-radius:3px;padding:0 1px}.tokens{line-height:1.9;font-family:ui-monospace,monospace}
details{margin:.3em 0}code{background:#f3f5f9;padding:0 .2em}
"""


def format_metric(value) -> str:
    """How the page shows a number: 4 decimals for scores and losses, integers as they are.

    Example:
        >>> format_metric(0.912345), format_metric(12)
        ('0.9123', '12')
    """
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    return f"{float(value):.4f}"


def metric_at(metrics: dict, path: str):
    """The entry of ``metrics`` at a dotted ``path`` such as ``baseline.test.macro_f1`` (KeyError when absent)."""
    value = metrics
    for key in path.split("."):
        value = value[key]
    return value


def image_data_uri(path: Path) -> str:
    """A PNG file as a data: URI, so the page carries its figures."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def render_html(title: str, metrics: dict, *, label_names: Optional[Sequence[str]] = None,
                confusion: Optional[list[list[int]]] = None, errors: Sequence[dict] = (),
                figures: Optional[dict[str, Path]] = None, config: Optional[dict] = None,
                explanations: Sequence[tuple[str, object]] = (), subtitle: str = "", extra: str = "") -> str:
    """The whole page as a string; every argument but ``title`` and ``metrics`` may be left out.

    Args:
        metrics: metrics.json's shape: {"validation": {...}, "test": {...}, optional "baseline", "warnings",
            "data_checks"}.
        label_names, confusion: the test confusion matrix (rows true, columns predicted) and its labels; the
            per-class precision, recall, F1 and support are read from it.
        errors: the most confident errors (evaluation.Evaluation.errors).
        figures: name -> PNG path; loss, metrics, confusion and lengths have their sections, others go last.
        config: config.json of the run: settings, versions and the data record.
        explanations: (caption, tfbert.attributions.Explanation) pairs, shown as highlighted tokens.
        extra: a section of the caller's own (HTML, escaped by the caller), shown after the scores.
    """
    figures = dict(figures or {})
    sections = [
        f"<h1>{escape(title)}</h1>", f"<p class='muted'>{escape(subtitle)}</p>" if subtitle else "",
        _warnings(metrics.get("warnings", [])),
        _headline(metrics),
        extra,
        _per_class(confusion, label_names),
        _confusion(confusion, label_names, figures.pop("confusion", None)),
        _figures("Training curves", [figures.pop(name) for name in ("loss", "metrics") if name in figures]),
        _lengths(figures.pop("lengths", None), config, metrics),
        _errors(errors),
        _explanations(explanations, label_names),
        _data_checks(config, metrics),
        _settings(config),
        _figures("Other figures", list(figures.values())),
    ]
    body = "\n".join(section for section in sections if section)
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<meta name='viewport' content='width=device-width,initial-scale=1'><style>{_CSS}</style></head>\n"
            f"<body>\n{body}\n</body></html>\n")


def write_html(path: Path, title: str, metrics: dict, **parts) -> Path:
    """:func:`render_html` written atomically to ``path``.

    Example:
        >>> write_html(Path("eval/report.html"), "evaluation", {"test": metrics})  # doctest: +SKIP
    """
    runs.write_text(Path(path), render_html(title, metrics, **parts))
    return Path(path)


def write_run_html(run, prepared, results, metrics: dict) -> Path:
    """report.html of a finished training run, with explanations of a few test predictions.

    Example:
        >>> write_run_html(context.run, prepared, results, metrics)  # doctest: +SKIP
        PosixPath('output/reviews/tiny/20261123_101500/report.html')
    """
    from tfbert import windows
    from tfbert.attributions import explain_test_examples

    config = json.loads((run.path / "config.json").read_text(encoding="utf-8"))
    test = results.evaluations["test"]
    single_label = prepared.corpus.task == "single_label"  # the other tasks' per-label counts are in metrics.json
    # Attributions take transformers' models apart, one window of a text at a time: not Keras 3 ones, nor answers
    # pooled from windows.
    explainable = (single_label and not windows.is_windowed(prepared.encoded["test"])
                   and not getattr(prepared.backend, "is_keras", False))
    try:
        explanations = explain_test_examples(run.model_dir, prepared.encoded["test"],
                                             run.path / "predictions_test.jsonl", EXPLAINED_ERRORS,
                                             EXPLAINED_CORRECT) if explainable else []
    except Exception as error:  # a model the attributions cannot take apart must not fail a trained run
        logger.warning("report.html without explanations: %s: %s", type(error).__name__, error)
        explanations = []
    settings = config.get("settings", {})
    title = f"{config.get('data', {}).get('name', '')} · {settings.get('model', {}).get('model_name', '')}"
    subtitle = (f"run {run.run_id}: best epoch {metrics['best_epoch']} of {metrics['epochs_run']}, "
                f"trained {metrics['train_seconds']:.0f} s, precision {metrics.get('precision_policy', '')}")
    return write_html(run.path / "report.html", title, metrics, label_names=prepared.label_names,
                      confusion=test.confusion if single_label else None, errors=test.errors, figures=results.figures, config=config,
                      explanations=explanations, subtitle=subtitle)


# --- sections ------------------------------------------------------------------------------------------------------

def html_table(header: Sequence[str], rows: Sequence[Sequence[str]], text_columns: Sequence[int] = ()) -> str:
    """An HTML table; cells are given as HTML (escape text before)."""
    head = "".join(f"<th{' class=text' if i in text_columns else ''}>{h}</th>" for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell if cell.startswith("<td") else
                                     f"<td{' class=text' if i in text_columns else ''}>{cell}</td>"
                                     for i, cell in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _metric_cell(metrics: dict, path: str) -> str:
    try:
        value = metric_at(metrics, path)
    except (KeyError, TypeError):
        return "<td class='muted'>–</td>"
    return f'<td data-metric="{escape(path)}">{format_metric(value)}</td>'


def _warnings(warnings: Sequence[str]) -> str:
    return "".join(f"<div class='warn'>⚠ {escape(w)}</div>" for w in warnings)


def _headline(metrics: dict) -> str:
    """Cards for test macro-F1 and accuracy (against the baseline when there is one), then the table of scores."""
    baseline = metrics.get("baseline") or {}
    cards = []
    for key, name in (("macro_f1", "test macro F1"), ("accuracy", "test accuracy")):
        if key not in metrics.get("test", {}):
            continue
        versus = ""
        if key in baseline.get("test", {}):
            change = metrics["test"][key] - baseline["test"][key]
            versus = (f"<div class='{'better' if change >= 0 else 'worse'}'>{change:+.4f} vs baseline "
                      f"<span data-metric='baseline.test.{key}'>{format_metric(baseline['test'][key])}</span></div>")
        cards.append(f"<div class='card'><div class='muted'>{name}</div><div class='value' data-metric='test.{key}'>"
                     f"{format_metric(metrics['test'][key])}</div>{versus}</div>")
    splits = [split for split in SPLITS if split in metrics]
    columns = [(split, split) for split in splits]
    columns += [(f"baseline.{split}", f"baseline {split}") for split in splits if split in baseline]
    rows = [[name, *(_metric_cell(metrics, f"{path}.{key}") for path, _ in columns)] for key, name in HEADLINE
            if any(key in metrics.get(split, {}) for split in splits)]
    analyzer = (f"<p class='muted'>Baseline: {escape(str(baseline['analyzer']))}</p>"
                if baseline.get("analyzer") else "")
    return ("<h2>Scores</h2><div class='cards'>" + "".join(cards) + "</div>"
            + html_table(["metric", *(escape(name) for _, name in columns)], rows, (0,)) + analyzer)


def per_class_scores(confusion: list[list[int]]) -> list[dict]:
    """Precision, recall, F1 and support of each class, read from a confusion matrix (rows true, columns predicted).

    Example:
        >>> [round(row["f1"], 3) for row in per_class_scores([[5, 1], [0, 4]])]
        [0.909, 0.889]
    """
    counts = np.asarray(confusion, dtype=np.float64)
    hits, true, predicted = np.diag(counts), counts.sum(axis=1), counts.sum(axis=0)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, true, out=np.zeros_like(hits), where=true > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(hits), where=total > 0)
    return [{"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for p, r, f, s in zip(precision, recall, f1, true)]


def _per_class(confusion, label_names) -> str:
    if confusion is None or label_names is None:
        return ""
    rows = [[escape(name), *(format_metric(row[key]) for key in ("precision", "recall", "f1", "support"))]
            for name, row in zip(label_names, per_class_scores(confusion))]
    return "<h2>Per class (test)</h2>" + html_table(["class", "precision", "recall", "F1", "support"], rows, (0,))


def _shaded(value: float, text: str) -> str:
    """A cell whose blue deepens with ``value`` in [0, 1]."""
    colour = "#fff" if value > 0.55 else "#1d2330"
    return f"<td style='background:rgba(31,104,180,{0.85 * value:.3f});color:{colour}'>{text}</td>"


def _confusion(confusion, label_names, figure: Optional[Path]) -> str:
    if confusion is None or label_names is None:
        return _figures("Confusion matrix (test)", [figure] if figure else [])
    counts = np.asarray(confusion)
    normalised = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    header = ["true \\ predicted", *map(escape, label_names)]
    tables = []
    for caption, show in (("counts", lambda i, j: str(counts[i, j])), ("row-normalised (recall)",
                                                                      lambda i, j: f"{normalised[i, j]:.2f}")):
        rows = [[escape(name), *(_shaded(normalised[i, j], show(i, j)) for j in range(len(label_names)))]
                for i, name in enumerate(label_names)]
        tables.append(f"<figure><figcaption>{caption}</figcaption>{html_table(header, rows, (0,))}</figure>")
    pictures = _images([figure]) if figure else ""
    return "<h2>Confusion matrix (test)</h2><div class='cards'>" + "".join(tables) + "</div>" + pictures


def _images(paths: Sequence[Path]) -> str:
    return "".join(f"<figure><img src='{image_data_uri(p)}' alt='{escape(Path(p).stem)}'></figure>"
                   for p in paths if p and Path(p).is_file())


def _figures(heading: str, paths: Sequence[Path]) -> str:
    images = _images(paths)
    return f"<h2>{escape(heading)}</h2>{images}" if images else ""


def _lengths(figure: Optional[Path], config: Optional[dict], metrics: dict) -> str:
    data = (config or {}).get("data", {})
    settings = (config or {}).get("settings", {}).get("data", {})
    notes = []
    if "truncated_share" in data:
        read = (f"over --max_length {escape(str(settings.get('max_length', '?')))}, read whole in windows "
                f"(--stride {escape(str(settings.get('stride')))}, --window_pool "
                f"{escape(str(settings.get('window_pool')))})" if settings.get("long_text") == "window" else
                f"truncated at --max_length {escape(str(settings.get('max_length', '?')))} (--truncation "
                f"{escape(str(settings.get('truncation', '?')))})")
        notes.append(f"{data['truncated_share']:.1%} of training texts {read}.")
    unknown = metrics.get("data_checks", {}).get("unknown_token_share", {})
    if unknown:
        notes.append("Unknown-token share (the model's unknown token among all but special tokens): "
                     + ", ".join(f"{escape(split)} {share:.1%}" for split, share in unknown.items()) + ".")
    if not notes and not figure:
        return ""
    return "<h2>Text length and vocabulary</h2>" + _images([figure] if figure else []) + "".join(
        f"<p>{note}</p>" for note in notes)


def _errors(errors: Sequence[dict]) -> str:
    if not errors:
        return ""
    rows = [[escape(e["label"]), escape(e["predicted"]), format_metric(e["confidence"]),
             escape(", ".join(f"{name} {p:.3f}" for name, p in e.get("probabilities", {}).items())),
             escape(e["text"])] for e in errors[:10]]
    return ("<h2>Most confident errors (test)</h2>"
            + html_table(["true", "predicted", "confidence", "probabilities", "text"], rows, (0, 1, 3, 4))
            + (f"<p class='muted'>{len(errors)} listed in errors.jsonl.</p>" if len(errors) > 10 else ""))


def highlighted_tokens(explanation) -> str:
    """The tokens as text, each on a background of its attribution: green towards the target, red against it.

    Example:
        >>> from tfbert.attributions import Explanation
        >>> "rgba(23,128,61" in highlighted_tokens(Explanation(["good"], np.array([1.0]), 1, 0.0, 1.0, 32))
        True
    """
    from tfbert.attributions import display_tokens

    scores = np.asarray(explanation.scores, dtype=np.float64)
    scale = float(np.abs(scores).max()) or 1.0
    spans = []
    for (text, space), score in zip(display_tokens(explanation.tokens), scores):
        colour = "23,128,61" if score >= 0 else "180,35,24"
        spans.append(("&#32;" if space else "") + f"<span title='{score:+.4f}' style='background:rgba({colour},"
                     f"{abs(score) / scale * 0.75:.3f})'>{escape(text)}</span>")
    return f"<div class='tokens'>{''.join(spans)}</div>"


def _explanations(explanations: Sequence[tuple[str, object]], label_names) -> str:
    if not explanations:
        return ""
    parts = ["<h2>Why the model decided</h2><p class='muted'>Integrated gradients over the input embeddings, towards "
             "the predicted class (baseline: [PAD] embeddings, special tokens kept). Green tokens pushed towards it, "
             "red against; hover a token for its score in logit units.</p>"]
    for caption, explanation in explanations:
        target = label_names[explanation.target] if label_names else str(explanation.target)
        top = ", ".join(f"{escape(token)} {score:+.3f}" for token, score in explanation.top_tokens(5))
        parts.append(f"<h3>{escape(caption)}</h3>{highlighted_tokens(explanation)}<p class='muted'>towards "
                     f"<b>{escape(target)}</b>; top tokens: {top}; completeness error "
                     f"{explanation.completeness_error:.2%} ({explanation.steps} steps)</p>")
    return "".join(parts)


def _data_checks(config: Optional[dict], metrics: dict) -> str:
    data = (config or {}).get("data", {})
    if not data:
        return ""
    sizes = data.get("sizes", {})
    rows = [[escape(split), str(n), escape(str(data.get("sources", {}).get(split, "")))] for split, n in sizes.items()]
    overlap = data.get("overlap", {})
    facts = [f"{escape(key.replace('_', ' '))}: {escape(str(value))}" for key, value in overlap.items()]
    shares = metrics.get("data_checks", {}).get("overlap_share", {})
    facts += [f"{escape(split)} texts also in an earlier split: {share:.1%}" for split, share in shares.items()]
    labels = ", ".join(escape(str(label)) for label in (config or {}).get("labels", []))
    return ("<h2>Data</h2>" + html_table(["split", "examples", "source"], rows, (0, 2))
            + (f"<p>Labels: {labels}.</p>" if labels else "")
            + ("<ul>" + "".join(f"<li>{fact}</li>" for fact in facts) + "</ul>" if facts else "")
            + (f"<p class='muted'>Fingerprint {escape(str(data['fingerprint']))}</p>" if data.get("fingerprint")
               else ""))


def _flatten(settings: dict, prefix: str = "") -> list[tuple[str, object]]:
    flat = []
    for key, value in settings.items():
        if isinstance(value, dict):
            flat += _flatten(value, f"{prefix}{key}.")
        else:
            flat.append((f"{prefix}{key}", value))
    return flat


def _settings(config: Optional[dict]) -> str:
    if not config:
        return ""
    recorded = {"settings": config.get("settings", {}), "resolved": config.get("resolved", {})}
    rows = [[escape(key), escape(json.dumps(value, ensure_ascii=False))] for key, value in _flatten(recorded)]
    versions = [[escape(name), escape(str(v))] for name, v in config.get("versions", {}).items()]
    command = " ".join(config.get("command", []))
    return ("<h2>Settings and versions</h2>" + (f"<p><code>{escape(command)}</code></p>" if command else "")
            + "<details open><summary>settings</summary>" + html_table(["setting", "value"], rows, (0, 1)) + "</details>"
            + "<details open><summary>versions</summary>" + html_table(["library", "version"], versions, (0, 1))
            + "</details>")
