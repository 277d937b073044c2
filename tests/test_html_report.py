"""report.html: self-contained (figures inline, no script, no network), texts escaped, numbers equal to metrics.json;
and in headless Chromium every figure loads and every data-metric reads as metrics.json says."""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import make_rows, write_jsonl

from tfbert.html_report import format_metric, metric_at, per_class_scores, render_html

CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1280,1600"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
METRICS = {
    "validation": {"accuracy": 0.8, "macro_f1": 0.79123, "loss": 0.5},
    "test": {"accuracy": 0.75, "macro_f1": 0.74444, "loss": 0.61, "n": 20},
    "baseline": {"validation": {"macro_f1": 0.7}, "test": {"macro_f1": 0.70001}, "analyzer": "word 1-2 grams"},
    "warnings": ["overlap: test 5.0% <also> in train"],
    "data_checks": {"unknown_token_share": {"train": 0.01}, "overlap_share": {"test": 0.05}},
}


def _figure(path: Path) -> Path:
    from tfbert import plots

    figure = plots.confusion_figure([[3, 1], [0, 4]], ["ham", "spam"])
    figure.savefig(path, dpi=40)
    return path


def test_the_page_is_self_contained_escaped_and_carries_its_numbers(tmp_path):
    errors = [{"label": "ham", "predicted": "spam", "confidence": 0.9, "text": "<script>alert(1)</script> & co",
               "probabilities": {"ham": 0.1, "spam": 0.9}}]
    page = render_html("run <1>", METRICS, label_names=["ham", "spam"], confusion=[[3, 1], [0, 4]], errors=errors,
                       figures={"confusion": _figure(tmp_path / "c.png")}, config={"versions": {"numpy": "2"}})
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in page
    assert "run &lt;1&gt;" in page and "&lt;also&gt;" in page
    assert not re.search(r"(src|href)=['\"]?https?:", page)  # nothing is fetched
    assert "src='data:image/png;base64," in page
    shown = dict(re.findall(r"data-metric=['\"]([\w.]+)['\"]>([^<]+)<", page))
    assert shown["test.macro_f1"] == "0.7444" and shown["baseline.test.macro_f1"] == "0.7000"
    for path, text in shown.items():
        assert text == format_metric(metric_at(METRICS, path))
    assert "word 1-2 grams" in page and "+0.0444 vs baseline" in page


def test_optional_parts_may_be_left_out():
    page = render_html("evaluation", {"test": {"macro_f1": 0.5}})
    assert page.startswith("<!DOCTYPE html>") and 'data-metric="test.macro_f1">0.5000<' in page
    assert "Per class" not in page and "baseline" not in page


def test_per_class_scores_equal_sklearn():
    from sklearn.metrics import precision_recall_fscore_support

    rng = np.random.default_rng(0)
    gold, predicted = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    predicted[predicted == 2] = 0  # a class never predicted: precision 0, not a division by zero
    confusion = np.zeros((3, 3), int)
    np.add.at(confusion, (gold, predicted), 1)
    ours = per_class_scores(confusion.tolist())
    expected = precision_recall_fscore_support(gold, predicted, labels=[0, 1, 2], zero_division=0)
    for key, values in zip(("precision", "recall", "f1", "support"), expected):
        np.testing.assert_allclose([row[key] for row in ours], values)


# --- in a browser ----------------------------------------------------------------------------------------------------

def _chromium(profile: Path):
    """A headless Chromium driven by chromedriver (Debian's packages), or skip the test."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip("chromium/chromedriver not installed: apt-get install chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver",
                                    reason="selenium not installed: pip install -r requirements.txt")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)  # no driver download


def _full_page_png(browser) -> bytes:
    """The whole page, not only the window (Chrome DevTools' captureBeyondViewport)."""
    shot = browser.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    return base64.b64decode(shot["data"])


@pytest.fixture(scope="module")
def finished_run(tiny_model_dir, tmp_path_factory) -> Path:
    from test_experiment import TINY

    from tfbert.config import parse_train_args
    from tfbert.experiment import train

    work = tmp_path_factory.mktemp("html_run")
    rows = [{"text": f"{row['text']} {chr(97 + i % 26)}{chr(97 + i // 26)}", "label": row["label"]}
            for i, row in enumerate(make_rows(90))]
    write_jsonl(work / "train.jsonl", rows)
    config = parse_train_args(["--model_name", str(tiny_model_dir), *TINY, "--output_dir", str(work / "output"),
                               "--plots_dir", str(work / "plots"), "--train_file", str(work / "train.jsonl")])
    return Path(train(config, report=lambda line: None)["run_dir"])


@pytest.mark.slow
def test_report_html_renders_in_chromium_with_its_figures_and_metrics(finished_run, tmp_path):
    page, metrics = finished_run / "report.html", json.loads((finished_run / "metrics.json").read_text())
    assert (finished_run / "report.md").is_file()  # report.md stays
    browser = _chromium(tmp_path / "profile")
    try:
        browser.get(page.resolve().as_uri())
        images = browser.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.src.slice(0, 22)])")
        shown = browser.execute_script(
            "return Array.from(document.querySelectorAll('[data-metric]')).map(e => [e.dataset.metric, e.innerText])")
        headings = browser.execute_script("return Array.from(document.querySelectorAll('h2')).map(h => h.innerText)")
        highlighted = browser.execute_script("return document.querySelectorAll('.tokens span').length")
        screenshot = finished_run / "report.png"  # next to the report, in the test's tmp dir
        screenshot.write_bytes(_full_page_png(browser))
    finally:
        browser.quit()
    assert {alt for alt, *_ in images} >= {"loss", "metrics", "confusion_matrix_test", "lengths"}
    broken = [alt for alt, complete, width, _ in images if not complete or width <= 0]
    assert not broken, f"figures that did not load: {broken}"
    assert all(src == "data:image/png;base64," for *_, src in images)
    assert {"test.macro_f1", "test.accuracy", "validation.macro_f1"} <= {path for path, _ in shown}
    for path, text in shown:
        assert text.strip() == format_metric(metric_at(metrics, path)), path
    assert {"Scores", "Per class (test)", "Confusion matrix (test)", "Why the model decided", "Data",
            "Settings and versions"} <= set(headings)
    assert highlighted > 0
    data = screenshot.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000


@pytest.mark.slow
def test_the_run_page_explains_errors_and_correct_predictions_within_5_percent(finished_run):
    page = (finished_run / "report.html").read_text(encoding="utf-8")
    errors = re.findall(r"completeness error ([\d.]+)%", page)
    assert errors and max(float(e) for e in errors) < 5.0
    assert "correct: " in page
    assert len(page) < 2_000_000  # figures at 120 dpi: a few hundred kB
