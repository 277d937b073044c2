"""TF_CONFIG for MultiWorkerMirroredStrategy, built from a scheduler's node list, a rank and a port.

One training process runs per node; the node list gives every worker's address in rank order, and the
rank says which one this process is. The job scripts in scripts/ export what this prints.

Example (shell):
    $ scontrol show hostnames "$SLURM_JOB_NODELIST" > nodes
    $ export TF_CONFIG=$(python -m tfbert.cluster tf-config --nodes-file nodes --rank "$SLURM_PROCID" --port 23456)

Example (Python):
    >>> tf_config(unique_hosts(["gpu1", "gpu1", "gpu2"]), rank=1, port=23456)["task"]
    {'type': 'worker', 'index': 1}
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Iterable, Optional

from tfbert.errors import TfbertError

DEFAULT_PORT = 23456


def unique_hosts(lines: Iterable[str]) -> list[str]:
    """Host names in order of first appearance, without blanks and # comments.

    A PBS nodefile repeats a host once per CPU or GPU slot; one training process runs per host, so each
    host counts once.

    Example:
        >>> unique_hosts(["n1\\n", "n1\\n", "n2\\n", "", "# spare", "n1"])
        ['n1', 'n2']
    """
    hosts: list[str] = []
    for line in lines:
        for host in line.split("#", 1)[0].replace(",", " ").split():
            if host not in hosts:
                hosts.append(host)
    return hosts


def read_nodes(path: str) -> list[str]:
    """The unique hosts of a node file ($PBS_NODEFILE, or ``scontrol show hostnames`` output); '-' reads stdin."""
    if path == "-":
        return unique_hosts(sys.stdin)
    try:
        return unique_hosts(Path(path).read_text(encoding="utf-8").splitlines())
    except OSError as error:
        raise TfbertError(f"--nodes-file {path}: cannot read it ({error.strerror or error})")


def worker_address(host: str, port: int) -> str:
    """``host:port``, unless ``host`` already names its port (several workers on one host, as in tests)."""
    return host if ":" in host.rsplit("]", 1)[-1] else f"{host}:{port}"


def tf_config(hosts: list[str], rank: int, port: int = DEFAULT_PORT) -> dict:
    """The TF_CONFIG of worker ``rank`` in a cluster of ``hosts`` (worker 0 is the chief, who writes the run).

    Example:
        >>> tf_config(["n1", "n2"], 0, 23456)
        {'cluster': {'worker': ['n1:23456', 'n2:23456']}, 'task': {'type': 'worker', 'index': 0}}
    """
    problems = []
    if not hosts:
        problems.append("the node list is empty; give the scheduler's node file")
    elif not 0 <= rank < len(hosts):
        problems.append(f"--rank {rank} is out of range for {len(hosts)} node(s) ({', '.join(hosts)}); "
                        f"use 0 to {len(hosts) - 1}")
    if not 1 <= port <= 65535:
        problems.append(f"--port {port} must be in 1-65535")
    if problems:
        raise TfbertError("; ".join(problems))
    return {"cluster": {"worker": [worker_address(host, port) for host in hosts]},
            "task": {"type": "worker", "index": rank}}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tfbert.cluster", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("tf-config", help="print the TF_CONFIG JSON of one worker")
    nodes = command.add_mutually_exclusive_group(required=True)
    nodes.add_argument("--nodes-file", help="file with one host per line ($PBS_NODEFILE, scontrol show hostnames); "
                                            "repeats count once; '-' reads stdin")
    nodes.add_argument("--nodes", help="hosts separated by commas or spaces, e.g. gpu1,gpu2")
    command.add_argument("--rank", type=int, required=True, help="this worker's index in the node list (0: chief)")
    command.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port every worker listens on")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    hosts = read_nodes(args.nodes_file) if args.nodes_file else unique_hosts([args.nodes])
    print(json.dumps(tf_config(hosts, args.rank, args.port)))
    return 0


if __name__ == "__main__":
    from tfbert.cli import run_main

    sys.exit(run_main(lambda: main()))
