"""Start-up per backend: seconds from `vsod serve` to /readyz 200, and the ready server's memory.

    python bench/startup.py                                   # vsod-student, onnxruntime vs torchscript, 3 rounds
    python bench/startup.py --backends onnxruntime torchscript eager --rounds 5 --threads 2

Each round starts one real server per backend (tests/servers.py: the process the tests start, polled
every 0.2 s), in alternating order, so a machine that speeds up or slows down during the run weighs on
every backend alike; the medians and their ratios are what to compare. The time covers importing the
server, loading and verifying the model, building the backend (tracing and freezing for torchscript,
opening the exported graph for onnxruntime) and warming it up at every batch size the engine forms.
RSS is the server process's resident memory once ready. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from common import load_avg, machine, run, start_server, stop_server


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vsod-student")
    parser.add_argument("--store", default=None, help="model store (default: the repository's model_store)")
    parser.add_argument("--backends", nargs="+", default=["onnxruntime", "torchscript"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    env = {"VSOD_MODEL_STORE": args.store} if args.store else {}
    seconds: dict[str, list[float]] = {backend: [] for backend in args.backends}
    memory: dict[str, list[float]] = {backend: [] for backend in args.backends}
    for round_index in range(args.rounds):
        order = args.backends if round_index % 2 == 0 else list(reversed(args.backends))
        for backend in order:
            began = time.monotonic()
            server = start_server(env, VSOD_MODEL=args.model, VSOD_BACKEND=backend, VSOD_THREADS=args.threads,
                                  OMP_NUM_THREADS=args.threads)
            seconds[backend].append(time.monotonic() - began)
            memory[backend].append(rss_mib(server.process.pid))
            stop_server(server)
    summary: dict[str, dict[str, Any]] = {
        backend: {"ready_s_median": round(statistics.median(seconds[backend]), 2),
                  "ready_s": [round(s, 2) for s in seconds[backend]],
                  "rss_mib_median": round(statistics.median(memory[backend]), 1)}
        for backend in args.backends
    }
    reference = args.backends[0]
    print(f"{'backend':<12} {'ready s (median)':>17} {'x ' + reference:>16} {'RSS MiB':>9}")
    for backend, row in summary.items():
        ratio = row["ready_s_median"] / summary[reference]["ready_s_median"]
        row["ratio_to_" + reference] = round(ratio, 2)
        print(f"{backend:<12} {row['ready_s_median']:>17.2f} {ratio:>16.2f} {row['rss_mib_median']:>9.1f}")
    print(json.dumps({"bench": "startup", "model": args.model, "threads": args.threads, "rounds": args.rounds,
                      "backends": summary, "machine": machine(), "load_avg": load_avg()}))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
