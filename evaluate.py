"""Score a trained model on labelled data: python evaluate.py --model RUN --test_file new.jsonl [--json]"""

import sys

import tfbert  # noqa: F401  (sets the environment before TensorFlow loads)
from tfbert.cli import parse_evaluate_args, run_main, setup_logging


def main() -> int:
    import json

    from tfbert import runtime

    config = parse_evaluate_args()
    setup_logging(quiet=True, verbose=config.verbose)
    runtime.import_tensorflow(config.verbose)
    from tfbert.evaluate import evaluate_model

    summary = evaluate_model(config, report=(lambda line: None) if config.json else print)
    if config.json:
        print(json.dumps(summary))
    else:
        width = max(len(key) for key in summary)
        print("\n".join(f"{key.ljust(width)}  {value:.4f}" if isinstance(value, float) else
                        f"{key.ljust(width)}  {value}" for key, value in summary.items()))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
