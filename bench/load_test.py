"""Load and fault test of serve.py on loopback; prints one JSON object.

    python bench/load_test.py --model output/<run>/saved_model [--clients 8] [--requests 400]
    python bench/load_test.py --model output/<run> --export compact     # the compact export, without TensorFlow
    python bench/load_test.py --model output/<run> --texts test.jsonl --batching both --faults off

Phases: (1) a bounded number of concurrent clients send predict requests: count, errors, p50/p99
latency, throughput, server memory before/after and at its peak (with --batching both: once with
server-side batching off, then on, each on a fresh server); (2) garbage bodies and a huge payload:
the server answers 400/413 and stays up; (3) the server is killed mid-load and restarted: clients
see connection errors, never a corrupt answer. Only 127.0.0.1 is contacted; every loop is bounded.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORDS = "the phone battery great awful screen fast slow love hate price quality shipping broken works".split()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """Resident memory now (VmRSS) or at its peak so far (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far: on a shared machine, texts per CPU second compare runs that
    wall-clock rates cannot (a server with more busy threads gets a larger share of a contended CPU)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def post(url: str, body: bytes, timeout: float = 30.0) -> tuple[int, dict | None]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def post_huge(port: int, size: int, chunked: bool) -> int | str:
    """Send a ``size``-byte body (declared up front, or streamed in chunks) and return the HTTP status.

    The server may answer 413 before reading the body and close the connection; a reset while sending
    is then expected, and the status is read if the answer made it through.
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest("POST", "/v1/models/tfbert:predict")
        connection.putheader("Content-Type", "application/json")
        if chunked:
            connection.putheader("Transfer-Encoding", "chunked")
            connection.endheaders()
            chunk = b"x" * 65536
            try:
                for _ in range(size // len(chunk)):
                    connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                connection.send(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
        else:  # declared size only: the server must refuse it without reading a byte of body
            connection.putheader("Content-Length", str(size))
            connection.endheaders()
        try:
            return connection.getresponse().status
        except (ConnectionError, http.client.HTTPException) as error:
            return f"closed ({type(error).__name__})"
    finally:
        connection.close()


def start_server(model: str, port: int, serve_args: tuple[str, ...] = (), env: dict | None = None) -> subprocess.Popen:
    log = tempfile.TemporaryFile()
    process = subprocess.Popen([sys.executable, str(ROOT / "serve.py"), "--model", model, "--port", str(port),
                                *serve_args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                               env=None if env is None else {**os.environ, **env})
    deadline = time.time() + 600  # loading and warming up every signature takes minutes on a busy machine
    while time.time() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2):
                return process
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.5)
    process.kill()
    process.wait()
    log.seek(0)
    raise SystemExit("server did not start: " + " | ".join(log.read().decode(errors="replace").splitlines()[-3:]))


def valid(answer: dict | None, size: int) -> bool:
    predictions = (answer or {}).get("predictions")
    return (isinstance(predictions, list) and len(predictions) == size
            and all(abs(sum(p["probabilities"]) - 1) < 1e-4 and p["label"] in p["label_names"] for p in predictions))


def load(url: str, clients: int, requests: int, batch: int, seconds: float, seed: int = 0,
         texts: list[str] | None = None) -> dict:
    """Requests of ``batch`` texts: consecutive ``texts`` in their order, or random words."""
    rng = random.Random(seed)
    if texts:
        bodies = [json.dumps({"instances": [texts[(i * batch + j) % len(texts)] for j in range(batch)]}).encode()
                  for i in range(max(1, len(texts) // batch))]
    else:
        bodies = [json.dumps({"instances": [" ".join(rng.choices(WORDS, k=rng.randint(3, 40))) for _ in range(batch)]})
                  .encode() for _ in range(64)]
    latencies, errors, corrupt, lock = [], [], [], threading.Lock()
    counter = iter(range(requests))
    deadline = time.time() + seconds

    def client():
        while time.time() < deadline:
            with lock:
                index = next(counter, None)
            if index is None:
                return
            started = time.perf_counter()
            try:
                status, answer = post(url, bodies[index % len(bodies)])
                ok = status == 200 and valid(answer, batch)
                with lock:
                    (latencies.append(time.perf_counter() - started) if ok else corrupt.append(status))
            except (urllib.error.URLError, ConnectionError, OSError) as error:
                with lock:
                    errors.append(type(error).__name__)
                time.sleep(0.01)  # the server is down: back off a little instead of spinning

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "requests": len(latencies) + len(errors) + len(corrupt), "ok": len(latencies),
        "connection_errors": len(errors), "bad_answers": len(corrupt),
        "p50_ms": round(1000 * statistics.median(ordered), 1) if ordered else None,
        "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1) if ordered else None,
        "requests_per_s": round(len(latencies) / wall, 1), "texts_per_s": round(len(latencies) * batch / wall, 1),
    }


def measured_load(model: str, port: int, serve_args: tuple[str, ...], env: dict, args, texts) -> dict:
    """One fresh server under the load phase: throughput, latency and its memory (the peak over start-up and load)."""
    url = f"http://127.0.0.1:{port}/v1/models/tfbert:predict"
    server = start_server(model, port, serve_args, env)
    try:
        post(url, json.dumps({"instances": ["warm up"]}).encode())
        report = {"serve_args": list(serve_args), "rss_mib_before": rss_mib(server.pid)}
        load(url, args.clients, 2 * args.clients, args.batch, args.seconds, seed=3, texts=texts)  # each shape once
        cpu = cpu_seconds(server.pid)
        report["load"] = load(url, args.clients, args.requests, args.batch, args.seconds, texts=texts)
        report["server_cpu_s"] = round(cpu_seconds(server.pid) - cpu, 1)
        report["texts_per_server_cpu_s"] = round(report["load"]["ok"] * args.batch / max(report["server_cpu_s"], 1e-9), 1)
        report["rss_mib_after"] = rss_mib(server.pid)
        report["rss_mib_peak"] = rss_mib(server.pid, "VmHWM")
    finally:
        server.terminate()
        server.wait(timeout=30)
    return report


def fault_phases(model: str, port: int, serve_args: tuple[str, ...], env: dict, args) -> dict:
    """Garbage and oversized bodies, then the server killed mid-load and restarted."""
    url = f"http://127.0.0.1:{port}/v1/models/tfbert:predict"
    server = start_server(model, port, serve_args, env)
    report = {}
    try:
        faults = {}
        for name, body in (("garbage", b"\x00\xff{{{"), ("wrong_type", b'{"instances": [{"text": 5}]}'),
                           ("empty", b'{"instances": []}'), ("not_an_object", b"[1, 2, 3]"),
                           ("too_many", json.dumps({"instances": ["a"] * 10000}).encode())):
            faults[name] = post(url, body)[0]
        faults["huge_declared"] = post_huge(port, 64 << 20, chunked=False)
        faults["huge_streamed"] = post_huge(port, 8 << 20, chunked=True)
        faults["alive_after"] = post(url, json.dumps({"instances": ["still there?"]}).encode())[0]
        report["faults"] = faults
        # Kill the server 2 s into an 8 s phase (request count bounded by the time, not reached first).
        killer = threading.Timer(2.0, server.kill)
        killer.start()
        report["kill_mid_load"] = load(url, args.clients, 100 * args.requests, args.batch, 8.0, seed=1)
        killer.join()
        report["kill_mid_load"]["server_exit_code"] = server.wait(timeout=30)
        started = time.perf_counter()
        server = start_server(model, port, serve_args, env)
        post(url, json.dumps({"instances": ["warm up"]}).encode())
        report["restart_seconds"] = round(time.perf_counter() - started, 1)
        report["after_restart"] = load(url, args.clients, args.requests, args.batch, 60.0, seed=2)
        report["rss_mib_end"] = rss_mib(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="run folder, SavedModel base path or compact export")
    parser.add_argument("--export", choices=["auto", "saved_model", "compact"], default="auto",
                        help="serve.py --export: which of a run's exports the server answers with")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--batch", type=int, default=1, help="texts per request")
    parser.add_argument("--seconds", type=float, default=120, help="upper bound on each load phase")
    parser.add_argument("--texts", help="JSON Lines file with a 'text' field: requests take its texts in order "
                                        "(default: random words)")
    parser.add_argument("--batching", choices=["on", "off", "both"], default="on",
                        help="serve.py's server-side batching; both: measure off, then on")
    parser.add_argument("--batch_timeout_ms", type=float, default=5.0, help="serve.py --batch_timeout_ms")
    parser.add_argument("--max_batch", type=int, default=256, help="serve.py --max_batch")
    parser.add_argument("--faults", choices=["on", "off"], default="on", help="also run the fault phases")
    parser.add_argument("--server_env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment of the server process, e.g. MALLOC_ARENA_MAX=2 (repeatable)")
    args = parser.parse_args()
    texts = None
    if args.texts:
        texts = [json.loads(line)["text"] for line in Path(args.texts).read_text(encoding="utf-8").splitlines()
                 if line.strip()]
    env = dict(item.split("=", 1) for item in args.server_env)
    port = free_port()
    common = ("--max_batch", str(args.max_batch), "--batch_timeout_ms", str(args.batch_timeout_ms),
              "--export", args.export)
    report = {"export": args.export, "clients": args.clients, "batch": args.batch, "texts": args.texts or "random words",
              "server_env": env, "load_average_before": [round(x, 2) for x in os.getloadavg()]}
    modes = ["off", "on"] if args.batching == "both" else [args.batching]
    for mode in modes:
        report[f"batching_{mode}"] = measured_load(args.model, port, ("--batching", mode, *common), env, args, texts)
    if args.batching == "both":
        off, on = report["batching_off"]["load"], report["batching_on"]["load"]
        report["throughput_on_vs_off"] = round(on["texts_per_s"] / max(off["texts_per_s"], 1e-9), 2)
        report["texts_per_cpu_s_on_vs_off"] = round(report["batching_on"]["texts_per_server_cpu_s"]
                                                  / max(report["batching_off"]["texts_per_server_cpu_s"], 1e-9), 2)
    if args.faults == "on":
        report.update(fault_phases(args.model, port, ("--batching", modes[-1], *common), env, args))
    report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report))


if __name__ == "__main__":
    main()
