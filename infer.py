"""Label texts with a trained model: python infer.py "text one" "text two" [--model RUN] [--top_k 3] [--json]"""

import argparse
import sys

import tfbert  # noqa: F401  (sets the environment before TensorFlow loads)
from tfbert.cli import run_main, setup_logging
from tfbert.errors import TfbertError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infer.py",
        description="Print each text's predicted label and confidence.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("texts", nargs="*", help="texts to classify")
    parser.add_argument("--model", help="run folder, save_pretrained folder, SavedModel or compact/ TFLite folder "
                                        "(default: newest run)")
    parser.add_argument("--output_dir", default="output", help="where to look for the newest run")
    parser.add_argument("--server", help="URL of a TF Serving-compatible endpoint, e.g. http://127.0.0.1:8501/v1/models/tfbert")
    parser.add_argument("--file", help="read texts from a file: one text a line, or JSON Lines with a text field")
    parser.add_argument("--text_column", default="text", help="field holding the text in a JSON Lines --file")
    parser.add_argument("--top_k", type=int, default=1, help="show the k most probable labels")
    parser.add_argument("--json", action="store_true", help="one JSON object per text")
    return parser


def read_texts(path: str, text_column: str) -> list[str]:
    import json
    from pathlib import Path

    file = Path(path)
    if not file.is_file():
        raise TfbertError(f"--file {path}: no such file; check the path")
    try:
        lines = file.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise TfbertError(f"--file {path}: not UTF-8; re-save the file as UTF-8") from None
    texts = []
    as_jsonl = file.suffix.lower() in (".jsonl", ".ndjson")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if as_jsonl:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise TfbertError(f"--file {path}: line {number} is not valid JSON") from None
            if not isinstance(record, dict) or text_column not in record:
                raise TfbertError(f"--file {path}: line {number} has no {text_column!r} field; set --text_column")
            texts.append(str(record[text_column]))
        else:
            texts.append(line)
    return texts


def main() -> int:
    import json

    args = build_parser().parse_args()
    setup_logging(quiet=True)
    if args.top_k < 1:
        raise TfbertError("--top_k must be at least 1")
    texts = list(args.texts) + (read_texts(args.file, args.text_column) if args.file else [])
    if not texts:
        raise TfbertError("no texts: give them as arguments (python infer.py \"some text\") or with --file")
    from tfbert import runtime
    from tfbert.predictors import load_predictor

    runtime.quiet_libraries()
    predictor = load_predictor(args.model, args.output_dir, args.server)
    probabilities = predictor.predict(texts)
    labels = predictor.labels
    k = min(args.top_k, len(labels))
    for text, row in zip(texts, probabilities):
        best = row.argsort()[::-1][:k]
        if args.json:
            print(json.dumps({
                "text": text, "label": labels[best[0]], "confidence": round(float(row[best[0]]), 6),
                "top_k": [{"label": labels[i], "probability": round(float(row[i]), 6)} for i in best],
            }, ensure_ascii=False))
        else:
            ranked = "  ".join(f"{labels[i]} {row[i]:.3f}" for i in best)
            print(f"{ranked}\t{text}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
