"""CPU speed per frame of the student and its teachers: eager vs TorchScript, batch 1 and 8; params and GFLOPs.

    python bench/model_speed.py                         # a fresh student, 352x352, 2 threads
    python bench/model_speed.py --model vsod-student    # a model from the store
    python bench/model_speed.py --threads 4 --runs 50 --batches 1 4 8
    python bench/model_speed.py --model vsod-student --subjects student spatial temporal

Prints a table, then one JSON line (the last line) with every number and the machine it came from.
Each timed call is one forward pass in the streaming steady state (a frame plus the previous frame's
state, so the inter-frame encoding is paid); ms/frame = median call time / batch. Timings move with
whatever else runs on the machine: quote them with the JSON line's `machine` and `load_avg`.

Teachers (`--subjects spatial temporal`, from distill.teachers: fresh weights, which do not change
the cost): the spatial teacher's call is one frame; the temporal teacher's is its streaming cost per
frame, i.e. encode the new frame, run both ConvGRUs over its window (the other W-1 frames' features
are cached) and decode it, as `TemporalTeacher.stream` does. They are slow, so they take
`--teacher-runs` calls. The JSON line gives the teachers' ms/frame as multiples of the student's.
Adding a model: write a function returning a `Subject` and list it in `SUBJECTS`.
"""

from __future__ import annotations

import argparse
import json
import os
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

from service.model import ModelStore, stkd_student  # noqa: E402
from service.model.complexity import count_flops, count_parameters  # noqa: E402
from service.model.runtime import StreamStep  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402


@dataclass
class Subject:
    """A network to time: `module(*inputs(batch))` is one call; `network` is what FLOPs count."""

    name: str
    module: nn.Module
    inputs: Callable[[int], tuple[Tensor, ...]]
    network: nn.Module


def student_subject(args: argparse.Namespace) -> Subject:
    if args.model:
        student, manifest = ModelStore(args.store).load(args.model)
        name = f"student:{manifest.model_id}"
    else:
        student, name = stkd_student(), "student:fresh"
    student.eval()
    state_shape = student.state_shape(tuple(args.size))

    def inputs(batch: int) -> tuple[Tensor, ...]:
        # The server's call: frames, the previous state, and which rows start a stream (none here).
        return torch.rand(batch, 3, *args.size), torch.rand(batch, *state_shape), torch.zeros(batch, dtype=torch.bool)

    return Subject(name, StreamStep(student).eval(), inputs, student)


class TeacherLogits(nn.Module):
    """The spatial teacher's per-frame call, logits only (what tracing can return)."""

    def __init__(self, teacher: nn.Module) -> None:
        super().__init__()
        self.teacher = teacher

    def forward(self, frames: Tensor) -> Tensor:
        return self.teacher(frames).logits


class TemporalTeacherStep(nn.Module):
    """One streamed frame of the temporal teacher: encode it, ConvGRUs over its window (the other
    frames' context features come cached, as in `TemporalTeacher.stream`), decode the frame."""

    def __init__(self, teacher: nn.Module) -> None:
        super().__init__()
        self.teacher = teacher

    def forward(self, frames: Tensor, cached: Tensor) -> Tensor:
        levels, deep = self.teacher.spatial.encode(frames)
        window = torch.cat([cached, deep.unsqueeze(1)], dim=1)  # B, W, C, h, w
        centre = window.shape[1] // 2
        temporal = self.teacher.temporal(window)[:, centre]
        return self.teacher.spatial.decoder(levels, temporal, frames.shape[-2:]).logits


def teacher_subject(kind: str) -> Callable[[argparse.Namespace], Subject]:
    def build(args: argparse.Namespace) -> Subject:
        from distill.teachers import SpatialTeacher, TemporalTeacher, model_flops

        if kind == "spatial":
            teacher = SpatialTeacher().eval()

            def inputs(batch: int) -> tuple[Tensor, ...]:
                return (torch.rand(batch, 3, *args.size),)

            subject = Subject("spatial-teacher", TeacherLogits(teacher).eval(), inputs, teacher)
        else:
            teacher = TemporalTeacher().eval()
            deep_shape = teacher.spatial.encode(torch.rand(1, 3, *args.size))[1].shape[1:]
            others = teacher.config.window - 1

            def inputs(batch: int) -> tuple[Tensor, ...]:
                return torch.rand(batch, 3, *args.size), torch.rand(batch, others, *deep_shape)

            subject = Subject("temporal-teacher", TemporalTeacherStep(teacher).eval(), inputs, teacher)
        subject.flops = lambda size: model_flops(teacher, size)  # type: ignore[attr-defined]
        subject.teacher = True  # type: ignore[attr-defined]
        return subject

    return build


SUBJECTS: dict[str, Callable[[argparse.Namespace], Subject]] = {
    "student": student_subject, "spatial": teacher_subject("spatial"), "temporal": teacher_subject("temporal"),
}


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
    flops = getattr(subject, "flops", lambda size: count_flops(subject.network, size))
    teacher = getattr(subject, "teacher", False)
    warmup, runs = (min(args.warmup, 2), args.teacher_runs) if teacher else (args.warmup, args.runs)
    result: dict[str, object] = {
        "params": count_parameters(subject.network),
        "gflops": round(flops(tuple(args.size)) / 1e9, 4),
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
                    reference = _logits(subject.module(*example))
                    try:
                        optimised = _logits(module(*example))
                    except RuntimeError as error:
                        # oneDNN's adaptive pooling needs sizes divisible by its bins (the teachers'
                        # pyramid pooling at 352: 11x11 into 2, 3, 6): freeze without oneDNN layouts.
                        print(f"{subject.name}: optimize_for_inference failed ({str(error).splitlines()[-1]}); "
                              "timing torch.jit.freeze instead", file=sys.stderr)
                        with torch.no_grad():
                            module = torch.jit.freeze(torch.jit.trace(subject.module, example).eval())
                        optimised = _logits(module(*example))
                        result["jit"] = "torch.jit.freeze (optimize_for_inference failed)"
                    torch.testing.assert_close(optimised.sigmoid(), reference.sigmoid(), rtol=0, atol=1e-3)
                median, fastest = timed_seconds(lambda m=module, x=example: m(*x), warmup, runs)
                timings[f"{mode}_b{batch}"] = round(1000 * median / batch, 3)
                best[f"{mode}_b{batch}"] = round(1000 * fastest / batch, 3)
    return result


def _logits(output: Tensor | tuple[Tensor, ...]) -> Tensor:
    return output[0] if isinstance(output, tuple) else output


def relative_to_student(results: dict[str, dict[str, object]]) -> dict[str, dict[str, float]]:
    """Each teacher's ms/frame and GFLOPs as multiples of the student's, same mode and batch."""
    student = next((r for name, r in results.items() if name.startswith("student")), None)
    if student is None:
        return {}
    out: dict[str, dict[str, float]] = {}
    for name, result in results.items():
        if result is student:
            continue
        ratios = {key: round(ms / student["ms_per_frame"][key], 2)  # type: ignore[index]
                  for key, ms in result["ms_per_frame"].items() if key in student["ms_per_frame"]}  # type: ignore[union-attr, operator]
        ratios["gflops"] = round(result["gflops"] / student["gflops"], 2)  # type: ignore[operator]
        out[name] = ratios
    return out


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
    parser.add_argument("--teacher-runs", type=int, default=5, help="timed calls for the (slow) teachers")
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
    relative = relative_to_student(results)
    for name, ratios in relative.items():
        print(f"{name}: x student " + ", ".join(f"{k} {v:.1f}" for k, v in ratios.items()))
    summary = {
        "bench": "model_speed",
        "device": "cpu",
        "input": list(args.size),
        "threads": args.threads,
        "warmup": args.warmup,
        "runs": args.runs,
        "statistic": "median (ms_per_frame) and min (ms_per_frame_best) over runs",
        "results": results,
        "relative_to_student": relative,
        "torch": torch.__version__,
        "machine": machine(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
