"""Teachers as predictors and as costs: masks for evaluation, FLOPs and CPU milliseconds per frame.

The same three numbers exist for the student (`Predictor.predict_clip`, `count_flops`,
`stream_ms_per_frame` below), so the ablation compares every model through one procedure. A frame's
cost is its steady-state cost in a stream: the student carries a one-frame state, the spatial
teacher sees the frame alone, the temporal teacher encodes the frame once and runs its ConvGRUs over
the frame's whole window.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from service.model import STKDStudent
from service.model.complexity import count_flops
from service.model.processing import frames_to_tensor, probabilities_to_masks

from .spatial import SpatialTeacher
from .temporal import TemporalTeacher

PredictClip = Callable[[Iterable[np.ndarray]], Iterator[np.ndarray]]


def teacher_predict_clip(model: SpatialTeacher | TemporalTeacher, input_size: tuple[int, int],
                         device: str | torch.device = "cpu", chunk: int = 8) -> PredictClip:
    """uint8 RGB frames in order -> uint8 masks in order (frame size), as `evaluate_sequences` wants."""
    model = model.eval().to(device)

    @torch.inference_mode()
    def predict(frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        if isinstance(model, TemporalTeacher):
            sizes: list[tuple[int, int]] = []

            def tensors() -> Iterator[Tensor]:
                for frame in frames:
                    sizes.append(frame.shape[:2])
                    yield frames_to_tensor([frame], input_size).to(device)

            for index, logits in enumerate(model.stream(tensors())):
                yield probabilities_to_masks(torch.sigmoid(logits), [sizes[index]])[0]
            return
        pending: list[np.ndarray] = []
        for frame in [*frames, None]:
            if frame is not None:
                pending.append(frame)
            if pending and (frame is None or len(pending) == chunk):
                logits = model(frames_to_tensor(pending, input_size).to(device)).logits
                yield from probabilities_to_masks(torch.sigmoid(logits), [f.shape[:2] for f in pending])
                pending = []

    return predict


@torch.no_grad()
def model_flops(model: nn.Module, input_size: tuple[int, int] = (352, 352)) -> int:
    """FLOPs of one streamed frame (a multiply-add counts 2, as in `service.model.complexity`)."""
    if not isinstance(model, TemporalTeacher):
        return count_flops(model, input_size)
    was_training = model.training
    model.eval()
    window = model.config.window
    device = next(model.parameters()).device  # "meta" counts without computing anything
    frames = [torch.rand(1, 3, *input_size, device=device) for _ in range(window)]
    try:
        with FlopCounterMode(display=False) as counter:
            for _ in model.stream(frames):
                pass
    finally:
        model.train(was_training)
    # Every frame of a W-frame stream pays a full window: the total over W frames is W frames' worth.
    return int(counter.get_total_flops()) // window


@torch.inference_mode()
def stream_ms_per_frame(model: nn.Module, input_size: tuple[int, int] = (352, 352), threads: int = 2,
                        frames: int = 10, repeats: int = 5) -> dict[str, float | int | list[int]]:
    """CPU milliseconds per frame over a stream of `frames` frames: median of `repeats` streams after
    one warm-up stream. Whole streams are timed (not single calls) because the temporal teacher emits
    a frame only once its window is complete."""
    model = model.eval().cpu()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    clip = [torch.rand(1, 3, *input_size) for _ in range(frames)]

    def one_stream() -> float:
        start = time.perf_counter()
        if isinstance(model, TemporalTeacher):
            for _ in model.stream(clip):
                pass
        elif isinstance(model, STKDStudent):
            state = None
            for frame in clip:
                state = model(frame, state).state
        else:
            for frame in clip:
                model(frame)
        return (time.perf_counter() - start) * 1000 / frames

    try:
        one_stream()
        timings = [one_stream() for _ in range(repeats)]
    finally:
        torch.set_num_threads(previous_threads)
    return {"ms_per_frame": round(statistics.median(timings), 2), "best_ms_per_frame": round(min(timings), 2),
            "threads": threads, "input_size": list(input_size), "frames": frames, "repeats": repeats}
