"""CPU speed of the student per frame: eager vs TorchScript, batch 1 and 8; params and GFLOPs.

    python bench/model_speed.py                         # a fresh student, 352x352, 2 threads
    python bench/model_speed.py --model vsod-student    # a model from the store
    python bench/model_speed.py --threads 4 --runs 50 --batches 1 4 8

Prints a table, then one JSON line (the last line) with every number and the machine it came from.
Each timed call is one forward pass in the streaming steady state (a frame plus the previous frame's
state, so the inter-frame encoding is paid); ms/frame = median call time / batch. Timings move with
whatever else runs on the machine: quote them with the JSON line's `machine` and `load_avg`.

Adding a model (the teachers, next): write a function returning a `Subject` and list it in
`SUBJECTS`; everything else (timing, TorchScript, FLOPs, table, JSON) is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from service.model import ModelStore, STKDStudent, stkd_student  # noqa: E402
from service.model.complexity import count_flops, count_parameters  # noqa: E402


@dataclass
class Subject:
    """A network to time: `module(*inputs(batch))` is one call; `network` is what FLOPs count."""

    name: str
    module: nn.Module
    inputs: Callable[[int], tuple[Tensor, ...]]
    network: nn.Module


class StudentLogitsAndState(nn.Module):
    """The student's streaming call with plain tensor outputs, which torch.jit.trace needs
    (StudentOutput is a dataclass, which tracing cannot return and scripting cannot compile)."""

    def __init__(self, student: STKDStudent) -> None:
        super().__init__()
        self.student = student

    def forward(self, frames: Tensor, previous: Tensor) -> tuple[Tensor, Tensor]:
        output = self.student(frames, previous)
        return output.logits, output.state


def student_subject(args: argparse.Namespace) -> Subject:
    if args.model:
        student, manifest = ModelStore(args.store).load(args.model)
        name = f"student:{manifest.model_id}"
    else:
        student, name = stkd_student(), "student:fresh"
    student.eval()
    state_shape = student.state_shape(tuple(args.size))

    def inputs(batch: int) -> tuple[Tensor, ...]:
        return torch.rand(batch, 3, *args.size), torch.rand(batch, *state_shape)

    return Subject(name, StudentLogitsAndState(student).eval(), inputs, student)


SUBJECTS: dict[str, Callable[[argparse.Namespace], Subject]] = {"student": student_subject}


def timed_seconds(call: Callable[[], object], warmup: int, runs: int) -> tuple[float, float]:
    """(median, best) seconds per call; the best shows what the code can do on a busy machine."""
    for _ in range(warmup):  # oneDNN builds its kernels and the JIT profiles its graph on early calls
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def compiled(subject: Subject, example: tuple[Tensor, ...], mode: str) -> nn.Module:
    if mode == "eager":
        return subject.module
    # Traced per batch size, then frozen with conv+BN folding and oneDNN layouts.
    return torch.jit.optimize_for_inference(torch.jit.trace(subject.module, example))


def bench_subject(subject: Subject, args: argparse.Namespace) -> dict[str, object]:
    result: dict[str, object] = {
        "params": count_parameters(subject.network),
        "gflops": round(count_flops(subject.network, tuple(args.size)) / 1e9, 4),
        "ms_per_frame": {},
        "ms_per_frame_best": {},
    }
    timings: dict[str, float] = result["ms_per_frame"]  # type: ignore[assignment]
    best: dict[str, float] = result["ms_per_frame_best"]  # type: ignore[assignment]
    with torch.inference_mode():
        for mode in args.modes:
            for batch in args.batches:
                example = subject.inputs(batch)
                with torch.no_grad():
                    module = compiled(subject, example, mode)
                if mode == "jit":  # the optimised graph must give the eager masks (BN folding moves the last bits)
                    reference, optimised = subject.module(*example)[0], module(*example)[0]
                    torch.testing.assert_close(optimised.sigmoid(), reference.sigmoid(), rtol=0, atol=1e-3)
                median, fastest = timed_seconds(lambda m=module, x=example: m(*x), args.warmup, args.runs)
                timings[f"{mode}_b{batch}"] = round(1000 * median / batch, 3)
                best[f"{mode}_b{batch}"] = round(1000 * fastest / batch, 3)
    return result


def print_table(results: dict[str, dict[str, object]]) -> None:
    print(f"{'model':<32} {'mode':<6} {'batch':>5} {'ms/frame':>9} {'frames/s':>9} {'best ms':>8}")
    for name, result in results.items():
        for key, ms in result["ms_per_frame"].items():  # type: ignore[union-attr]
            mode, batch = key.rsplit("_b", 1)
            fastest = result["ms_per_frame_best"][key]  # type: ignore[index]
            print(f"{name:<32} {mode:<6} {batch:>5} {ms:>9.2f} {1000 / ms:>9.1f} {fastest:>8.2f}")
        print(f"{name:<32} params {result['params'] / 1e6:.3f} M, {result['gflops']:.3f} GFLOPs/frame")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a model name in the store (default: a fresh, untrained student)")
    parser.add_argument("--store", help="model store folder (default: $VSOD_MODEL_STORE or ./model_store)")
    parser.add_argument("--subjects", nargs="+", default=["student"], choices=sorted(SUBJECTS))
    parser.add_argument("--size", type=int, nargs=2, default=[352, 352], metavar=("H", "W"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--modes", nargs="+", default=["eager", "jit"], choices=["eager", "jit"])
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    # Tracing notes that the attention's 1/sqrt(channels) becomes a constant: true for a fixed model.
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    torch.manual_seed(0)
    results = {}
    for key in args.subjects:
        subject = SUBJECTS[key](args)
        results[subject.name] = bench_subject(subject, args)
    print_table(results)
    summary = {
        "bench": "model_speed",
        "device": "cpu",
        "input": list(args.size),
        "threads": args.threads,
        "warmup": args.warmup,
        "runs": args.runs,
        "statistic": "median (ms_per_frame) and min (ms_per_frame_best) over runs",
        "results": results,
        "torch": torch.__version__,
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus".replace("  ", " "),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
