"""Where a stored model's streaming step spends its time: ONNX Runtime's own profiler, per part.

    python bench/step_profile.py --model vsod-student --runs 30 --threads 1

Runs the model's exported step graph (`step.onnx`) on random frames with a carried state, then sums the
profiler's kernel times by the module each node came from (the exporter names nodes after the module
path, e.g. `/student/motion/...`) and by operator type. Prints two tables and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort
from common import run, summary  # bench/common.py: also puts the checkout on sys.path

from service.model import ModelStore


def module_of(node: str, depth: int) -> str:
    """`/student/motion/compare/compare.0/Conv_kernel_time` at depth 2 -> `student/motion`."""
    parts = [part for part in node.split("/")[:-1] if part]
    return "/".join(parts[:depth]) or "(graph)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vsod-student")
    parser.add_argument("--store", default=None, help="model store (default $VSOD_MODEL_STORE or ./model_store)")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--depth", type=int, default=2, help="module path depth to group by (default 2)")
    args = parser.parse_args(argv)

    store = ModelStore(args.store)
    manifest = store.manifest(args.model)
    graph = store.step_graph(args.model, manifest)
    if graph is None:
        print(f"step_profile: {args.model} has no exported step graph (vsod-train export-graph)", file=sys.stderr)
        return 1
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "step")
    session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {}
    for spec in session.get_inputs():
        shape = [args.batch if not isinstance(d, int) else d for d in spec.shape]
        feeds[spec.name] = np.zeros(shape, bool) if spec.type == "tensor(bool)" else rng.random(shape, np.float32)
    session.run(None, feeds)  # warm-up, profiled too: dropped below by counting only the last runs
    for _ in range(args.runs):
        session.run(None, feeds)
    events = json.loads(Path(session.end_profiling()).read_text())

    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    per_run = len(kernels) // (args.runs + 1)
    kernels = kernels[per_run:]  # the warm-up run's
    by_module: dict[str, float] = defaultdict(float)
    by_op: dict[str, float] = defaultdict(float)
    for event in kernels:
        by_module[module_of(event["name"], args.depth)] += event["dur"] / 1000 / args.runs / args.batch
        by_op[event["args"]["op_name"]] += event["dur"] / 1000 / args.runs / args.batch
    total = sum(by_module.values())
    for title, table in (("module", by_module), ("operator", by_op)):
        print(f"{title:30s} ms/frame  share")
        for name, ms in sorted(table.items(), key=lambda item: -item[1]):
            print(f"{name:30s} {ms:8.2f}  {ms / total:5.1%}")
        print()
    rounded = {name: round(ms, 3) for name, ms in sorted(by_module.items(), key=lambda item: -item[1])}
    print(summary("step_profile", args, {
        "model": f"{args.model}@{manifest.sha256[:12]}", "input": list(manifest.input_size), "batch": args.batch,
        "threads": args.threads, "runs": args.runs, "ms_per_frame": round(total, 3), "by_module": rounded,
        "onnxruntime": ort.__version__}, argv))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
