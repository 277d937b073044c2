"""A multi-label corpus from the livedoor news corpus: its 9 categories merged into 9 overlapping topic labels.

    python scripts/livedoor_multilabel.py --data_dir ../shared/data/livedoor --out livedoor_topics.jsonl
    python train.py --train_file livedoor_topics.jsonl --text_pair_column text_pair --model_name ...

Each article keeps its title (``text``), body (``text_pair``) and source category, and gets the topics of its
category (TOPICS below): e.g. a smax article is technology + smartphones, a sports-watch one entertainment +
sports + news. The written file is a derived copy: the corpus (CC BY-ND 2.1 JP) may not be redistributed
modified, so keep it local. With --baseline the script also prints a one-vs-rest TF-IDF logistic-regression
baseline's test micro/macro-F1 on train.py's splits (seed 42, 8:1:1, iteratively stratified).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TOPICS = {  # category -> topic labels
    "it-life-hack": ["technology"],
    "kaden-channel": ["technology", "appliances"],
    "smax": ["technology", "smartphones"],
    "dokujo-tsushin": ["lifestyle", "women"],
    "peachy": ["lifestyle", "women"],
    "livedoor-homme": ["lifestyle", "men"],
    "movie-enter": ["entertainment"],
    "sports-watch": ["entertainment", "sports", "news"],
    "topic-news": ["news"],
}


def topic_rows(data_dir: str) -> list[dict]:
    """The articles of the livedoor folder (or archive) at ``data_dir`` with their topic labels."""
    from tfbert.data.presets import load_preset

    split = load_preset("livedoor", data_dir=data_dir)["train"]
    names = split.features["label"].names
    return [{"text": row["text"], "text_pair": row["text_pair"], "label": TOPICS[names[row["label"]]],
             "category": names[row["label"]]} for row in split]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", required=True, help="the livedoor text/ folder or ldcc-20140209.tar.gz")
    parser.add_argument("--out", default="livedoor_topics.jsonl", help="the JSON Lines file to write")
    parser.add_argument("--baseline", action="store_true", help="print the one-vs-rest TF-IDF baseline's scores")
    args = parser.parse_args()
    rows = topic_rows(args.data_dir)
    Path(args.out).write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    labels = sorted({label for row in rows for label in row["label"]})
    print(f"{args.out}: {len(rows)} articles, {len(labels)} labels ({', '.join(labels)})")
    if args.baseline:
        from tfbert.config import DataConfig
        from tfbert.data.corpus import load_corpus
        from tfbert.task_metrics import multi_label_baseline

        corpus = load_corpus(DataConfig(train_file=args.out, text_pair_column="text_pair"), seed=42)
        result = multi_label_baseline(corpus.splits, corpus.label_names, seed=42)
        print(json.dumps({"sizes": corpus.sizes(), "analyzer": result["analyzer"], "seconds": result["seconds"],
                          **{f"{split}_{key}": round(result[split][key], 4) for split in ("validation", "test")
                             for key in ("micro_f1", "macro_f1", "subset_accuracy")}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
