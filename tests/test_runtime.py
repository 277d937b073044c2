"""Process-level helpers: memory a step freed goes back to the OS; oneDNN told that weights are frozen only by the
import of TensorFlow in a process that only predicts."""

import ctypes
import subprocess
import sys
from pathlib import Path

import pytest

from tfbert import runtime


def resident_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20


def allocate_in_a_cycle(mib: int) -> list:
    """``mib`` MiB in malloc blocks below its mmap threshold (so freed, they stay in its heap), held by a list that
    refers to itself (so only the garbage collector frees them), with a small block after each MiB that the caller
    keeps: the heap cannot simply shrink from its top, as it would if the last blocks were freed."""
    blocks: list = []
    pins = []
    for _ in range(mib):
        blocks.extend(ctypes.create_string_buffer(64 << 10) for _ in range(16))
        pins.append(ctypes.create_string_buffer(2048))
    blocks.append(blocks)
    return pins


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and glibc's malloc")
def test_a_step_returns_what_it_freed_to_the_os():
    runtime.returning_freed_memory(lambda: None)()  # what earlier tests freed is not resident (their blocks reused)
    before = resident_mib()
    pins = []

    @runtime.returning_freed_memory
    def step():
        pins.extend(allocate_in_a_cycle(300))
        assert resident_mib() > before + 250  # the blocks were really resident
        return "done"

    assert step() == "done"
    assert resident_mib() < before + 50


FROZEN_WEIGHTS_PROBE = """
import os, sys
os.environ.pop("TF_ONEDNN_ASSUME_FROZEN_WEIGHTS", None)
if sys.argv[1] == "imported first":
    import tensorflow
from tfbert import runtime
runtime.import_tensorflow(frozen_weights=sys.argv[1] != "not asked")
print(os.environ.get("TF_ONEDNN_ASSUME_FROZEN_WEIGHTS"))
"""


@pytest.mark.slow
@pytest.mark.parametrize("case, expected", [("asked", "1"), ("not asked", "None"), ("imported first", "None")])
def test_weights_are_assumed_frozen_only_when_asked_by_the_import_of_tensorflow(case, expected):
    """A process that built any oneDNN kernel before (TensorFlow imported: it may have trained) is never told."""
    completed = subprocess.run([sys.executable, "-c", FROZEN_WEIGHTS_PROBE, case], capture_output=True, text=True,
                               timeout=300, cwd=str(Path(__file__).resolve().parent.parent))
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.split()[-1] == expected
