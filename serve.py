"""Serve a run's export over TF Serving's REST API: python serve.py --model RUN [--port 8501] [--export auto]"""

import sys
from pathlib import Path

import tfbert  # noqa: F401  (sets the environment before TensorFlow loads)
from tfbert.cli import parse_serve_args, run_main, setup_logging
from tfbert.errors import TfbertError


def main() -> int:
    config = parse_serve_args()
    setup_logging(verbose=config.verbose)
    from tfbert import runtime
    from tfbert.model_choice import choose_served_export
    from tfbert.runs import newest_run

    path = Path(config.model) if config.model else newest_run(config.output_dir)
    if not path.is_dir():
        raise TfbertError(f"--model {path}: no such folder")
    choice = choose_served_export(path, config.export)
    if choice.kind == "saved_model":  # a compact export is served without TensorFlow
        runtime.import_tensorflow(config.verbose, keras=False, frozen_weights=True)
    from tfbert.serving import LoadedModel, ServerLimits, create_app

    runtime.quiet_libraries()
    if choice.kind == "compact":
        from tfbert.compact_serving import CompactModel

        loaded = CompactModel(choice.path)
    else:
        loaded = LoadedModel(choice.path)
    app = create_app(loaded, config.model_name, ServerLimits(config.max_body_bytes, config.max_batch),
                     batch_timeout_ms=config.batch_timeout_ms if config.batching == "on" else None)
    import uvicorn

    print(f"serving {choice.path} ({choice.reason}) as /v1/models/{config.model_name} "
          f"on http://{config.host}:{config.port}", flush=True)
    uvicorn.run(app, host=config.host, port=config.port, log_level="info" if config.verbose else "warning")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
