"""The README cannot drift: every command its quick starts show runs here, on the tiny test model.

The commands run as written, with three substitutions a reader would make too: the tiny model instead of
the bundled MiniLM (appended `--model_name`, one epoch, short texts), the run folder that the earlier
commands made instead of the README's example path, and a free port instead of 8501.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import make_rows, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
QUICK_STARTS = ("Train", "Predict", "Serve")
EXAMPLE_RUN = re.compile(r"output/[\w.-]+/[\w.-]+/\d{8}_\d{6}")
TINY_TRAINING = ["--epochs", "1", "--batch_size", "16", "--max_length", "32"]


def sections(text: str) -> dict[str, str]:
    """README text by its `## ` headings."""
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return {title.strip(): body for title, body in zip(parts[1::2], parts[2::2])}


def code_blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


def quick_start_commands(text: str) -> list[str]:
    """Every command line of the bash blocks of the Train, Predict and Serve sections, in order."""
    found = sections(text)
    commands = []
    for title in QUICK_STARTS:
        for block in code_blocks(found[title], "bash"):
            commands += [line.strip() for line in block.splitlines() if line.strip()]
    return commands


def test_readme_is_a_front_door():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150
    assert "../shared" not in text
    commands = quick_start_commands(text)
    assert any(c.startswith("python train.py") for c in commands)
    assert any(c.startswith("python infer.py") for c in commands)
    assert any(c.startswith("python serve.py") for c in commands)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _example_files(folder: Path) -> None:
    """The files the README's commands name, made from the tests' tiny review data."""
    rows = make_rows(90)
    lines = ["body,stars"] + [f"{r['text']},{r['label']}" for r in rows]
    (folder / "reviews.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    # headerless, text<TAB>label with a trailing empty field, as many public Japanese sets are
    (folder / "headerless.tsv").write_text("".join(f"{r['text']}\t{r['label']}\t\n" for r in rows), encoding="utf-8")
    (folder / "texts.txt").write_text("great value\nawful, broken on arrival\n", encoding="utf-8")
    write_jsonl(folder / "texts.jsonl", rows[:3])


class Shell:
    """Runs README lines the way a shell in the project folder would, with the substitutions above."""

    def __init__(self, cwd: Path, model_dir: Path):
        self.cwd, self.model_dir = cwd, model_dir
        self.port = _free_port()
        self.server: subprocess.Popen | None = None

    @staticmethod
    def in_background(line: str) -> bool:
        return shlex.split(line, comments=True)[-1] == "&"

    def argv(self, line: str) -> list[str]:
        words = [word for word in shlex.split(line, comments=True) if word != "&"]
        words = [w.replace("8501", str(self.port)) for w in words]
        words = [EXAMPLE_RUN.sub(str(self.newest_run()), w) if EXAMPLE_RUN.search(w) else w for w in words]
        if words[0] == "python":
            script = ROOT / words[1]
            words = [sys.executable, str(script) if script.is_file() else words[1], *words[2:]]
            if words[1].endswith("train.py") and "--help" not in words:
                words += ["--model_name", str(self.model_dir), *TINY_TRAINING]
        return words

    def newest_run(self) -> Path:
        runs = sorted(p.parent for p in (self.cwd / "output").glob("*/*/*/metrics.json"))
        assert runs, "the README predicts before any command trained"
        return max(runs, key=lambda p: p.name).relative_to(self.cwd)

    def run(self, line: str) -> subprocess.CompletedProcess:
        if self.in_background(line):
            self.start_server(self.argv(line))
            return subprocess.CompletedProcess(line, 0, "", "")
        done = subprocess.run(self.argv(line), cwd=self.cwd, capture_output=True, text=True, timeout=600,
                              env=_environment())
        assert done.returncode == 0, f"{line}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        return done

    def start_server(self, argv: list[str]) -> None:
        import httpx

        self.server = subprocess.Popen(argv, cwd=self.cwd, env=_environment(), stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 180
        while time.time() < deadline:
            assert self.server.poll() is None, self.server.stderr.read()
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise AssertionError("serve.py did not get ready in 180 s")

    def stop(self) -> None:
        if self.server and self.server.poll() is None:
            self.server.terminate()
            self.server.wait(timeout=30)


def _environment() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1"}


@pytest.mark.slow
def test_every_quick_start_command_runs(tiny_model_dir, tmp_path):
    _example_files(tmp_path)
    (tmp_path / "tfbert").symlink_to(ROOT / "tfbert")  # the README's paths are relative to the project
    shell = Shell(tmp_path, tiny_model_dir)
    outputs = {}
    try:
        for line in quick_start_commands(README.read_text(encoding="utf-8")):
            outputs[line] = shell.run(line).stdout
    finally:
        shell.stop()
    trained = [line for line in outputs if line.startswith("python train.py") and "--help" not in line]
    runs = list((tmp_path / "output").glob("*/*/*/metrics.json"))
    assert len(runs) == len(trained)
    for line, out in outputs.items():
        if line.startswith("python infer.py"):
            assert out.strip(), line
        if line.startswith("curl"):
            assert "predictions" in json.loads(out)


@pytest.mark.slow
def test_the_python_example_runs(tiny_model_dir, tmp_path):
    block = code_blocks(sections(README.read_text(encoding="utf-8"))["From Python"], "python")[0]
    tiny = json.dumps(["--model_name", str(tiny_model_dir), "--output_dir", str(tmp_path / "output"),
                       "--plots_dir", str(tmp_path / "plots"), *TINY_TRAINING])
    assert "parse_train_args([" in block
    script = block.replace("parse_train_args([", f"parse_train_args({tiny} + [")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=_environment())
    assert done.returncode == 0, done.stderr[-3000:]
    assert "neg" in done.stdout and "pos" in done.stdout
