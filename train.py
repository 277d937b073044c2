"""Fine-tune a BERT-family encoder for text classification: python train.py --help"""

import sys

import tfbert  # noqa: F401  (sets the environment before TensorFlow loads)
from tfbert.cli import run_main, setup_logging


def main() -> int:
    import json

    from tfbert import runtime
    from tfbert.sweep import parse_train_command

    config, sweep_plan = parse_train_command()
    setup_logging(config.training.quiet or config.training.json, config.training.verbose)
    runtime.import_tensorflow(config.training.verbose)
    if sweep_plan is not None:
        return sweep(config, sweep_plan)
    from tfbert.experiment import train
    from tfbert.resume import given_flags

    summary = train(config, report=(lambda line: None) if config.training.json else print,
                    given_flags=given_flags(sys.argv[1:]))
    if config.training.json:
        print(json.dumps(summary))
    else:
        warnings = summary.pop("warnings", [])
        width = max(len(key) for key in summary)
        print("\n" + "\n".join(f"{key.ljust(width)}  {value:.4f}" if isinstance(value, float) else
                               f"{key.ljust(width)}  {value}" for key, value in summary.items()))
        for warning in warnings:  # last, where they are read; the log showed them when the data was checked
            print(f"warning: {warning}")
    return 0


def sweep(config, plan) -> int:
    """--sweep/--seeds: one run per point and seed; print the points' validation scores and the chosen point."""
    import json

    from tfbert.sweep import run_sweep, summary_lines

    record = run_sweep(config, plan, report=(lambda line: None) if config.training.json else print)
    print(json.dumps(record) if config.training.json else "\n" + "\n".join(summary_lines(record)))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
