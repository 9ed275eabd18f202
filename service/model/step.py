"""The streaming step: the one call a server makes per batch of frames, with plain tensors.

    logits, state = StreamStep(model)(frames, previous, fresh)

Every backend (service.model.runtime) runs exactly this call, and each optimised form of it is
checked against the eager module on `agreement_examples` before it serves a frame.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from .student import STKDStudent

TOLERANCE = 1e-3  # largest probability difference from eager a float32 optimised step may show
HALF_TOLERANCE = 1e-2  # the same for float16 on a GPU: its 10-bit mantissa moves probabilities by a few 1e-3

Step = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]


class StreamStep(nn.Module):
    """The student's streaming call with plain tensor inputs and outputs, which tracing and ONNX
    export need (StudentOutput is a dataclass: tracing cannot return it and scripting cannot compile it)."""

    def __init__(self, student: STKDStudent) -> None:
        super().__init__()
        self.student = student

    def forward(self, frames: Tensor, previous: Tensor, fresh: Tensor) -> tuple[Tensor, Tensor]:
        output = self.student(frames, previous, fresh)
        return output.logits, output.state


def full_inputs(
    model: STKDStudent, frames: Tensor, previous: Tensor | None, fresh: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """(frames, previous, fresh) with nothing missing: no previous means zeros and every row fresh."""
    batch = frames.shape[0]
    if previous is None:
        shape = model.state_shape(tuple(frames.shape[-2:]))  # type: ignore[arg-type]
        previous = frames.new_zeros((batch, *shape))
        fresh = torch.ones(batch, dtype=torch.bool, device=frames.device)
    elif fresh is None:
        fresh = torch.zeros(batch, dtype=torch.bool, device=frames.device)
    return frames, previous.to(frames.dtype), fresh


def agreement_examples(model: STKDStudent, input_size: tuple[int, int]) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """Inputs an optimised step must agree with eager on: a mixed pair (what export traces), a first
    frame alone, a batch of three with one stream starting, and a steady pair (seeded, so repeatable)."""
    state_shape = model.state_shape(input_size)
    for batch, fresh_rows in ((2, 1), (1, 1), (3, 1), (2, 0)):
        generator = torch.Generator().manual_seed(batch * 10 + fresh_rows)
        frames = torch.rand(batch, 3, *input_size, generator=generator)
        previous = torch.rand(batch, *state_shape, generator=generator)
        fresh = torch.zeros(batch, dtype=torch.bool)
        fresh[:fresh_rows] = True
        yield frames, previous, fresh


def step_disagreement(a: Step, b: Step, model: STKDStudent, input_size: tuple[int, int], stream_frames: int = 4,
                      device: torch.device | None = None) -> float:
    """The largest probability difference between two forms of the step: on `agreement_examples`,
    then over a stream of `stream_frames` frames in which each carries its own state forward (so a
    state that drifts shows up too). The inputs are made on the CPU and moved to `device`."""
    device = device or torch.device("cpu")
    worst = 0.0
    with torch.inference_mode():
        for example in agreement_examples(model, input_size):
            example = tuple(t.to(device) for t in example)  # type: ignore[assignment]
            worst = max(worst, _probability_error(a(*example)[0], b(*example)[0]))
        generator = torch.Generator().manual_seed(stream_frames)
        frames = torch.rand(stream_frames, 2, 3, *input_size, generator=generator).to(device)
        state_a = state_b = torch.zeros(2, *model.state_shape(input_size), device=device)
        fresh = torch.tensor([True, False], device=device)  # one stream starts, the other pairs with zeros at first
        for frame in frames:
            (logits_a, state_a), (logits_b, state_b) = a(frame, state_a, fresh), b(frame, state_b, fresh)
            worst = max(worst, _probability_error(logits_a, logits_b))
            fresh = torch.tensor([False, False], device=device)
    return worst


def _probability_error(logits_a: Tensor, logits_b: Tensor) -> float:
    return float((logits_a.float().sigmoid() - logits_b.float().sigmoid()).abs().max())
