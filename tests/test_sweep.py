"""Sweeps: --sweep/--seeds parsing and grid expansion (fast), and a 2-point sweep on the tiny model (slow) that
writes one normal run per point under the sweep folder and chooses by validation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import pytest
from conftest import make_rows, write_jsonl

from tfbert.errors import TfbertError
from tfbert.sweep import SweepPlan, parse_sweep, parse_train_command, parse_value


def test_the_grid_expands_first_key_slowest():
    plan = parse_sweep(["lr=1e-5,3e-5", "batch_size=16,32"], None, default_seed=42)
    assert plan.seeds == [42]
    assert plan.points() == [{"lr": 1e-5, "batch_size": 16}, {"lr": 1e-5, "batch_size": 32},
                             {"lr": 3e-5, "batch_size": 16}, {"lr": 3e-5, "batch_size": 32}]
    assert SweepPlan(seeds=[1, 2]).points() == [{}]  # repeats only: one point, the base settings


def test_values_are_parsed_by_the_fields_type():
    assert parse_value("epochs", "3", int) == 3 and parse_value("xla", "true", bool) is True
    assert parse_value("class_weight", "None", Optional[str]) is None
    plan = parse_sweep(["model_name=a/b,c", "freeze_encoder=false,true"], "1,2,3", default_seed=42)
    assert plan.grid == {"model_name": ["a/b", "c"], "freeze_encoder": [False, True]} and plan.seeds == [1, 2, 3]


def test_no_sweep_flags_means_a_single_run():
    config, plan = parse_train_command(["--epochs", "1"])
    assert plan is None and config.training.epochs == 1


def test_every_problem_is_named_at_once():
    with pytest.raises(TfbertError) as caught:
        parse_sweep(["lrr=1e-5", "batch_size=x", "precision=fp8", "lr="], "1,a", default_seed=42)
    message = str(caught.value)
    assert "'lrr' is not a setting" in message and "batch_size, " in message and "model_name" in message
    assert "'x' is not a valid int" in message and "'fp8' is not one of" in message
    assert "give values after '='" in message and "--seeds 1,a" in message and "\n" not in message


def test_seed_and_data_settings_are_not_swept():
    with pytest.raises(TfbertError, match="--seeds"):
        parse_sweep(["seed=1,2"], None, default_seed=42)
    with pytest.raises(TfbertError, match="'train_file' is not a setting"):
        parse_sweep(["train_file=a.jsonl,b.jsonl"], None, default_seed=42)


def test_resume_is_for_one_run():
    with pytest.raises(TfbertError, match="--resume continues one run"):
        parse_train_command(["--resume", "auto", "--seeds", "1,2"])


def test_bad_points_are_refused_before_any_run():
    with pytest.raises(TfbertError, match=r"lr=2\.0: --lr must be between 0 and 1"):
        parse_train_command(["--sweep", "lr=1e-5,2"])


@pytest.mark.slow
def test_a_two_point_sweep_writes_normal_runs_and_chooses_by_validation(tiny_model_dir, tmp_path, tiny_rows):
    from tfbert.runs import finished_runs, newest_run
    from tfbert.sweep import run_sweep

    train_file = write_jsonl(tmp_path / "reviews.jsonl", make_rows(60))
    cache = tmp_path / "cache"
    config, plan = parse_train_command([
        "--model_name", str(tiny_model_dir), "--train_file", str(train_file), "--epochs", "1", "--batch_size", "8",
        "--max_length", "16", "--precision", "float32", "--patience", "0", "--cache_dir", str(cache),
        "--output_dir", str(tmp_path / "output"), "--plots_dir", str(tmp_path / "plots"),
        "--sweep", "lr=1e-4,1e-2"])
    cached_after_each = []
    lines = []

    def report(line: str) -> None:
        lines.append(line)
        cached_after_each.append(len(list(cache.rglob("*.arrow"))))

    record = run_sweep(config, plan, report=report)
    sweep_dir = Path(record["sweep_dir"])
    assert sweep_dir.parent == tmp_path / "output" / "reviews" / "sweeps"
    saved = json.loads((sweep_dir / "sweep.json").read_text(encoding="utf-8"))
    assert saved["status"] == "finished" and len(saved["points"]) == 2 and (sweep_dir / "sweep.md").is_file()
    best = max(saved["points"], key=lambda point: point["validation"]["macro_f1"]["mean"])
    assert saved["chosen"]["setting"] == best["setting"] and "test" in saved["chosen"]
    assert all("test" not in point for point in saved["points"])  # the others' test scores are not shown
    assert saved["baseline"] is not None and "macro_f1" in saved["baseline"]["test"]  # --baseline on by default
    run_dirs = [Path(run) for point in saved["points"] for run in point["runs"]]
    assert all(run.is_relative_to(sweep_dir) and (run / "model" / "config.json").is_file() for run in run_dirs)
    lrs = [json.loads((run / "config.json").read_text())["settings"]["training"]["lr"] for run in run_dirs]
    assert lrs == [1e-4, 1e-2]
    assert newest_run(tmp_path / "output") == run_dirs[-1] and len(finished_runs(tmp_path / "output")) == 2
    # The second point tokenises nothing new: its splits come from the first point's cache files.
    assert cached_after_each[-1] == cached_after_each[1] == 3
    # report.html: the points over seeds, then the chosen point's first run, as a browser shows it.
    page = Path(record["report"])
    assert page == sweep_dir / "report.html"
    html = page.read_text(encoding="utf-8")
    chosen_label = f"lr={saved['chosen']['setting']['lr']:g} (chosen)"
    assert chosen_label in html and html.count("(chosen)") == 1
    _check_in_chromium(page, json.loads((Path(saved["chosen"]["runs"][0]) / "metrics.json").read_text()), tmp_path)


def _check_in_chromium(page: Path, metrics: dict, tmp_path: Path) -> None:
    """Every figure loaded and every number shown equals metrics.json; the screenshot is kept beside the page."""
    from test_html_report import PNG_SIGNATURE, _chromium, _full_page_png

    from tfbert.html_report import format_metric, metric_at

    browser = _chromium(tmp_path / "profile")
    try:
        browser.get(page.resolve().as_uri())
        widths = browser.execute_script("return Array.from(document.images).map(i => i.complete && i.naturalWidth)")
        shown = browser.execute_script(
            "return Array.from(document.querySelectorAll('[data-metric]')).map(e => [e.dataset.metric, e.innerText])")
        (page.parent / "report.png").write_bytes(_full_page_png(browser))
    finally:
        browser.quit()
    assert len(widths) >= 3 and all(width and width > 0 for width in widths)
    assert "test.macro_f1" in {path for path, _ in shown}
    assert all(text.strip() == format_metric(metric_at(metrics, path)) for path, text in shown)
    assert (page.parent / "report.png").read_bytes().startswith(PNG_SIGNATURE)
