"""CPU speed per frame of the student and its teachers: ONNX Runtime vs TorchScript vs eager; params and GFLOPs.

    python bench/model_speed.py                         # a fresh student, 352x352, 1 and 2 threads, batch 1 and 8
    python bench/model_speed.py --model vsod-student    # a model from the store
    python bench/model_speed.py --threads 4 --runs 50 --batches 1 4 8
    python bench/model_speed.py --model vsod-student --subjects student spatial temporal
    python bench/model_speed.py --model motion-mix --baseline vsod-student --size 256 256 --modes onnxruntime

Prints a table, then one JSON line (the last line) with every number and the machine it came from.
Each timed call is one forward pass in the streaming steady state (a frame plus the previous frame's
state, so the inter-frame encoding is paid); ms/frame = median call time / batch. Timings move with
whatever else runs on the machine: quote them with the JSON line's `machine` and `load_avg`.

The student runs through the server's own backends (`StepRuntime` with `backend=` and `threads=`,
torch's threads set by `torch.set_num_threads` first, as the server does): `onnxruntime` (the step
graph: the store's when its input size is `--size`, else one exported to a temporary folder),
`torchscript` and `eager`, each checked against the eager model at every batch before timing. Its
configurations (mode x threads x batch) are timed in `--rounds` interleaved rounds with the modes'
order rotating, so the machine's drift hits every mode alike; each ratio (`torchscript/onnxruntime`:
ms per frame over the first `--modes` entry's) is the median of the per-round ratios. With
`--baseline MODEL`, that stored student runs in the same rounds at the input size it is served at
(its manifest's), each mode beside the same mode of the student, and `MODE/baseline:MODE` gives how
many times slower the student is: the check of the "streaming step within 2x of today's" budget when
a student grows.

Teachers (`--subjects spatial temporal`, bench/teacher_speed.py) run `eager` and `torchscript`, one
configuration after another: the spatial teacher's call is one frame, the temporal teacher's its
streaming cost per frame. The JSON line gives the teachers' ms/frame as multiples of the student's.
What is timed and how (`Subject`, timed calls) lives in bench/speed_timing.py. Adding a model: write a
function returning a `Subject` and list it in `SUBJECTS`.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from service.model import ModelStore, stkd_student
from service.model.complexity import count_flops, count_parameters
from service.model.onnx_step import STEP_GRAPH, export_step
from service.model.runtime import StepRuntime
from service.model.step import StreamStep

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, run
from speed_timing import Subject, base_result, key, timed_calls
from teacher_speed import bench_teacher, teacher_subject

STUDENT_MODES = ("onnxruntime", "torchscript", "eager")
EXPECTED_MODE = {"onnxruntime": "onnxruntime-cpu", "torchscript": "torchscript", "eager": "eager"}


def student_subject(args: argparse.Namespace, model: str | None = None, served_size: bool = False) -> Subject:
    """The student `model` from the store (default `--model`; none: a fresh, untrained one), timed at
    `--size`, or with `served_size` at the input size its manifest gives (as the server runs it)."""
    model = model or args.model
    size = (int(args.size[0]), int(args.size[1]))
    store = ModelStore(args.store)
    if model:
        student, manifest = store.load(model)
        name = f"student:{manifest.model_id}"
        if served_size:
            size = manifest.input_size
    else:
        student, manifest, name = stkd_student(), None, "student:fresh"
    student.eval()
    state_shape = student.state_shape(size)

    def inputs(batch: int) -> tuple[Tensor, ...]:
        # The server's call: frames, the previous state, and which rows start a stream (none here).
        return torch.rand(batch, 3, *size), torch.rand(batch, *state_shape), torch.zeros(batch, dtype=torch.bool)

    subject = Subject(name, StreamStep(student).eval(), inputs, student, student=student, size=size)
    if "onnxruntime" in args.modes:
        if manifest is not None and manifest.step_graph and tuple(manifest.input_size) == size:
            subject.graph, subject.graph_source = store.step_graph(model, manifest), "store"
        else:  # only the batch of a step graph is dynamic: export one at the timed size
            folder = tempfile.TemporaryDirectory(prefix="vsod-speed-")
            subject.keep.append(folder)
            subject.graph = Path(folder.name) / STEP_GRAPH
            export_step(student, size, subject.graph)  # checked against eager before it returns
            subject.graph_source = f"exported at {size[0]}x{size[1]} to a temporary folder"
    return subject


SUBJECTS: dict[str, Callable[[argparse.Namespace], Subject]] = {
    "student": student_subject, "spatial": teacher_subject("spatial"), "temporal": teacher_subject("temporal"),
}


BASELINE = "baseline:"  # the prefix of the --baseline student's modes


def bench_student(subject: Subject, args: argparse.Namespace, baseline: Subject | None = None) -> dict[str, Any]:
    """The student through the server's backends, configurations interleaved in rounds (module doc);
    with `baseline`, that student's modes join the same rounds, prefixed `baseline:`."""
    assert subject.student is not None
    result = base_result(subject, args)
    modes = [m for m in args.modes if m in STUDENT_MODES]
    students = {"": subject, **({BASELINE: baseline} if baseline is not None else {})}
    labels = [prefix + mode for prefix in students for mode in modes]
    runtimes: dict[tuple[str, int], StepRuntime] = {}
    actual: dict[str, str] = {}
    for threads in args.threads:
        torch.set_num_threads(threads)  # the server sets its thread count before it builds the runtime
        for prefix, timed in students.items():
            assert timed.student is not None  # a student subject carries its model
            for mode in modes:
                runtime = StepRuntime(timed.student, torch.device("cpu"), timed.size, mode,
                                      timed.graph, threads)
                if runtime.mode != EXPECTED_MODE[mode]:
                    print(f"warning: {timed.name}: backend {mode} runs as {runtime.mode} (see the log above)",
                          file=sys.stderr)
                runtimes[prefix + mode, threads] = runtime
                actual[prefix + mode] = runtime.mode
    result["modes"] = actual
    if subject.graph is not None:
        result["step_graph"] = subject.graph_source
    if baseline is not None:
        result["baseline"] = {"name": baseline.name, "input": list(baseline.size),
                              "params": count_parameters(baseline.network),
                              "gflops": round(count_flops(baseline.network, baseline.size) / 1e9, 4)}
    # frames, previous: a steady stream, each student with a state of its own shape
    examples = {prefix: {batch: timed.inputs(batch)[:2] for batch in args.batches} for prefix, timed in students.items()}
    per_round = max(1, math.ceil(args.runs / args.rounds))
    samples: dict[str, list[float]] = {}
    round_ms: dict[str, list[float]] = {}
    with torch.inference_mode():
        for threads in args.threads:  # warm-up, and each backend checked against eager at each batch
            torch.set_num_threads(threads)
            for prefix, timed in students.items():
                assert timed.student is not None
                for example in examples[prefix].values():
                    reference = timed.student(*example).logits.sigmoid()
                    for mode in modes:
                        runtime = runtimes[prefix + mode, threads]
                        torch.testing.assert_close(runtime(*example)[0].sigmoid(), reference, rtol=0, atol=1e-3)
                        for _ in range(args.warmup):
                            runtime(*example)
        for index in range(args.rounds):
            for threads in args.threads:
                torch.set_num_threads(threads)
                for batch in args.batches:
                    for label in labels[index % len(labels):] + labels[: index % len(labels)]:  # rotate the order
                        runtime = runtimes[label, threads]
                        example = examples[BASELINE if label.startswith(BASELINE) else ""][batch]
                        runtime(*example)  # one untimed call: the thread count or the shape just changed
                        times = timed_calls(functools.partial(runtime, *example), per_round)
                        samples.setdefault(key(label, batch, threads), []).extend(times)
                        round_ms.setdefault(key(label, batch, threads), []).append(1000 * statistics.median(times) / batch)
    timings: dict[str, float] = result["ms_per_frame"]
    best: dict[str, float] = result["ms_per_frame_best"]
    for name, times in samples.items():
        batch = int(name.rsplit("_b", 1)[1].split("_t")[0])
        timings[name] = round(1000 * statistics.median(times) / batch, 3)
        best[name] = round(1000 * min(times) / batch, 3)
    ratios = mode_ratios(round_ms, modes, args.batches, args.threads)
    if baseline is not None:
        for mode in modes:
            ratios.update(mode_ratios(round_ms, [BASELINE + mode, mode], args.batches, args.threads))
    result["ratios"] = ratios
    return result


def mode_ratios(round_ms: dict[str, list[float]], modes: list[str], batches: list[int],
                threads: list[int]) -> dict[str, dict[str, float]]:
    """Each mode's ms/frame over the first mode's, the median of per-round ratios, per batch and threads."""
    if len(modes) < 2:
        return {}
    reference = modes[0]
    out: dict[str, dict[str, float]] = {}
    for mode in modes[1:]:
        out[f"{mode}/{reference}"] = {
            f"b{b}_t{t}": round(statistics.median(
                other / ref for other, ref in zip(round_ms[key(mode, b, t)], round_ms[key(reference, b, t)], strict=True)), 3)
            for t in threads for b in batches
        }
    return out


def relative_to_student(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each teacher's ms/frame and GFLOPs as multiples of the student's, same mode, batch and threads."""
    student = next((r for name, r in results.items() if name.startswith("student")), None)
    if student is None:
        return {}
    out: dict[str, dict[str, float]] = {}
    for name, result in results.items():
        if result is student:
            continue
        ratios = {k: round(ms / student["ms_per_frame"][k], 2)
                  for k, ms in result["ms_per_frame"].items() if k in student["ms_per_frame"]}
        ratios["gflops"] = round(result["gflops"] / student["gflops"], 2)
        out[name] = ratios
    return out


def print_table(results: dict[str, dict[str, Any]]) -> None:
    print(f"{'model':<32} {'mode':<22} {'threads':>7} {'batch':>5} {'ms/frame':>9} {'frames/s':>9} {'best ms':>8}")
    for name, result in results.items():
        for k, ms in result["ms_per_frame"].items():
            mode, rest = k.rsplit("_b", 1)
            batch, threads = rest.split("_t")
            fastest = result["ms_per_frame_best"][k]
            print(f"{name:<32} {mode:<22} {threads:>7} {batch:>5} {ms:>9.2f} {1000 / ms:>9.1f} {fastest:>8.2f}")
        print(f"{name:<32} params {result['params'] / 1e6:.3f} M, {result['gflops']:.3f} GFLOPs/frame")
        for ratio, cells in result.get("ratios", {}).items():
            print(f"{name:<32} {ratio} ms/frame (median of rounds): "
                  + ", ".join(f"{cell.replace('_', ' ')} {value:.2f}" for cell, value in cells.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a model name in the store (default: a fresh, untrained student)")
    parser.add_argument("--store", help="model store folder (default: $VSOD_MODEL_STORE or ./model_store)")
    parser.add_argument("--baseline", metavar="MODEL",
                        help="a stored student to time in the same rounds as the student, at the input size its "
                        "manifest gives: each mode's ms/frame as a multiple of the baseline's (e.g. a grown student "
                        "against the shipped default)")
    parser.add_argument("--subjects", nargs="+", default=["student"], choices=sorted(SUBJECTS))
    parser.add_argument("--size", type=int, nargs=2, default=[352, 352], metavar=("H", "W"))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch and ONNX Runtime threads")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--modes", nargs="+", default=list(STUDENT_MODES), choices=STUDENT_MODES,
                        help="backends; the student's ratios are over the first (teachers: eager, torchscript)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--runs", type=int, default=20, help="timed calls per student configuration, over all rounds")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the student's configurations")
    parser.add_argument("--teacher-runs", type=int, default=5, help="timed calls for the (slow) teachers")
    args = parser.parse_args(argv)
    args.rounds = max(1, min(args.rounds, args.runs))

    # Tracing notes that the attention's 1/sqrt(channels) becomes a constant: true for a fixed model.
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    torch.manual_seed(0)
    results: dict[str, dict[str, Any]] = {}
    for name in args.subjects:
        subject = SUBJECTS[name](args)
        if subject.teacher:
            results[subject.name] = bench_teacher(subject, args)
        else:
            baseline = student_subject(args, args.baseline, served_size=True) if args.baseline else None
            results[subject.name] = bench_student(subject, args, baseline)
    print_table(results)
    relative = relative_to_student(results)
    for name, ratios in relative.items():
        print(f"{name}: x student " + ", ".join(f"{k} {v:.1f}" for k, v in ratios.items()))
    student = next((r for name, r in results.items() if name.startswith("student")), {})
    summary = {
        "bench": "model_speed",
        "device": "cpu",
        "input": list(args.size),
        "threads": args.threads,
        "warmup": args.warmup,
        "runs": args.runs,
        "rounds": args.rounds,
        "statistic": "median (ms_per_frame) and min (ms_per_frame_best) over runs; ratios: median over rounds",
        "ratios": student.get("ratios", {}),
        "results": results,
        "relative_to_student": relative,
        "torch": torch.__version__,
        "onnxruntime": _onnxruntime_version(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
        "machine": machine(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
    }
    print(json.dumps(summary))
    return 0


def _onnxruntime_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


if __name__ == "__main__":
    sys.exit(run(main))
