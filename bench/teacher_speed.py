"""The teachers' side of bench/model_speed.py (`--subjects spatial temporal`): how each is called and timed.

They come from distill.teachers with fresh weights, which do not change the cost, and have no step
graph: `eager` and `torchscript` (traced per batch size, then `optimize_for_inference`, checked against
eager), timed one configuration after another, `--teacher-runs` calls each since they are slow. The
spatial teacher's call is one frame; the temporal teacher's is its streaming cost per frame: encode the
new frame, run both ConvGRUs over its window (the other W-1 frames' features are cached) and decode it,
as `TemporalTeacher.stream` does.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from speed_timing import Subject, base_result, key, timed_seconds
from torch import Tensor, nn

if TYPE_CHECKING:  # built only when a teacher is timed: distill is the training package
    from distill.teachers import SpatialTeacher, TemporalTeacher

TEACHER_MODES = ("eager", "torchscript")


class TeacherLogits(nn.Module):
    """The spatial teacher's per-frame call, logits only (what tracing can return)."""

    def __init__(self, teacher: SpatialTeacher) -> None:
        super().__init__()
        self.teacher = teacher

    def forward(self, frames: Tensor) -> Tensor:
        return self.teacher(frames).logits


class TemporalTeacherStep(nn.Module):
    """One streamed frame of the temporal teacher: encode it, ConvGRUs over its window (the other
    frames' context features come cached, as in `TemporalTeacher.stream`), decode the frame."""

    def __init__(self, teacher: TemporalTeacher) -> None:
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

        teacher: SpatialTeacher | TemporalTeacher
        if kind == "spatial":
            teacher = spatial = SpatialTeacher().eval()

            def inputs(batch: int) -> tuple[Tensor, ...]:
                return (torch.rand(batch, 3, *args.size),)

            subject = Subject("spatial-teacher", TeacherLogits(spatial).eval(), inputs, teacher)
        else:
            teacher = temporal = TemporalTeacher().eval()
            deep_shape = temporal.spatial.encode(torch.rand(1, 3, *args.size))[1].shape[1:]
            others = temporal.config.window - 1

            def inputs(batch: int) -> tuple[Tensor, ...]:
                return torch.rand(batch, 3, *args.size), torch.rand(batch, others, *deep_shape)

            subject = Subject("temporal-teacher", TemporalTeacherStep(temporal).eval(), inputs, teacher)
        subject.flops = lambda size: model_flops(teacher, size)
        subject.teacher = True
        return subject

    return build


def compiled(subject: Subject, example: tuple[Tensor, ...], mode: str) -> nn.Module:
    if mode == "eager":
        return subject.module
    # Traced per batch size, then frozen with conv+BN folding and oneDNN layouts.
    return torch.jit.optimize_for_inference(torch.jit.trace(subject.module, example))


def bench_teacher(subject: Subject, args: argparse.Namespace) -> dict[str, Any]:
    """A teacher, one configuration after another: eager, and TorchScript checked against it."""
    result = base_result(subject, args)
    timings: dict[str, float] = result["ms_per_frame"]
    best: dict[str, float] = result["ms_per_frame_best"]
    warmup, runs = min(args.warmup, 2), args.teacher_runs
    with torch.inference_mode():
        for threads in args.threads:
            torch.set_num_threads(threads)
            for mode in [m for m in args.modes if m in TEACHER_MODES]:
                for batch in args.batches:
                    example = subject.inputs(batch)
                    with torch.no_grad():
                        module = compiled(subject, example, mode)
                    if mode == "torchscript":  # the optimised graph must give the eager masks (BN folding moves the last bits)
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
                            result["torchscript"] = "torch.jit.freeze (optimize_for_inference failed)"
                        torch.testing.assert_close(optimised.sigmoid(), reference.sigmoid(), rtol=0, atol=1e-3)
                    median, fastest = timed_seconds(functools.partial(module, *example), warmup, runs)
                    timings[key(mode, batch, threads)] = round(1000 * median / batch, 3)
                    best[key(mode, batch, threads)] = round(1000 * fastest / batch, 3)
    return result


def _logits(output: Tensor | tuple[Tensor, ...]) -> Tensor:
    return output[0] if isinstance(output, tuple) else output
