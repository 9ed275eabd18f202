"""What bench/model_speed.py times and how: the `Subject` (a network and its inputs), timed calls, result keys.

Shared by the student's side (model_speed.py) and the teachers' (teacher_speed.py).
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import timed
from torch import Tensor, nn

from service.model.complexity import count_flops, count_parameters
from service.model.student import STKDStudent


@dataclass
class Subject:
    """A network to time: `module(*inputs(batch))` is one call; `network` is what FLOPs count.
    A student also carries its model and the step graph ONNX Runtime runs (`graph`, `graph_source`)."""

    name: str
    module: nn.Module
    inputs: Callable[[int], tuple[Tensor, ...]]
    network: nn.Module
    student: STKDStudent | None = None
    graph: Path | None = None
    graph_source: str = ""
    teacher: bool = False
    flops: Callable[[tuple[int, int]], float] | None = None
    keep: list[object] = field(default_factory=list)  # what must outlive the subject (a temp folder)
    size: tuple[int, int] = (352, 352)  # the input (height, width) it is timed at


def timed_calls(call: Callable[[], object], runs: int) -> list[float]:
    """Seconds of each of `runs` calls."""
    return [timed(call) for _ in range(runs)]


def timed_seconds(call: Callable[[], object], warmup: int, runs: int) -> tuple[float, float]:
    """(median, best) seconds per call; the best shows what the code can do on a busy machine."""
    for _ in range(warmup):  # oneDNN builds its kernels and the JIT profiles its graph on early calls
        call()
    times = timed_calls(call, runs)
    return statistics.median(times), min(times)


def key(mode: str, batch: int, threads: int) -> str:
    return f"{mode}_b{batch}_t{threads}"


def base_result(subject: Subject, args: argparse.Namespace) -> dict[str, Any]:
    flops = subject.flops or (lambda size: count_flops(subject.network, size))
    return {"params": count_parameters(subject.network), "gflops": round(flops(tuple(args.size)) / 1e9, 4),
            "ms_per_frame": {}, "ms_per_frame_best": {}}
