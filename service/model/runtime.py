"""How the student's streaming step runs on a device: eager, a frozen TorchScript graph, or CUDA fp16.

    runtime = StepRuntime(model, device, input_size, optimize=True)
    logits, state = runtime(frames, previous, fresh)   # previous/fresh may be None

One call is `STKDStudent.forward(frames, previous, fresh)` reduced to the two tensors inference
needs (the logits and the next frame's state). The paths:

- CPU, `optimize=True`: the step is traced once with *every* input present (previous features and
  a `fresh` row mask) and frozen by `torch.jit.optimize_for_inference` (batch norm folded into the
  convolutions, oneDNN layouts). A batch of first frames is fed as zeros with every row fresh, which
  the model resolves with `torch.where` to exactly what `previous=None` computes, so one graph serves
  first frames, mixed batches and steady streams at any batch size. Faster than eager on CPU
  (bench/model_speed.py; figures in bench/RESULTS.md). If tracing fails, or the graph disagrees
  with eager by more than 1e-3 in probability, it logs why and runs eager.
- CUDA, `optimize=True`: the weights in float16 and channels_last (tensor cores); the state is
  handed back as float32 so its bytes format does not change. CUDA graphs / torch.compile are left
  out until a GPU run shows they pay. UNTESTED here: the development machine has no GPU.
- `optimize=False` (`VSOD_OPTIMIZE=false`): the eager module, float32, the reference path.

No bfloat16 anywhere: on CPUs without native bf16 it is far slower than float32 (bench/RESULTS.md).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from .student import STKDStudent

log = logging.getLogger("vsod.runtime")
TOLERANCE = 1e-3  # largest probability difference from eager the optimised graph may show


class StreamStep(nn.Module):
    """The student's streaming call with plain tensor inputs and outputs, which tracing needs
    (StudentOutput is a dataclass: tracing cannot return it and scripting cannot compile it)."""

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


def trace_step(model: STKDStudent, input_size: tuple[int, int], batch: int = 2) -> torch.jit.ScriptModule:
    """Trace the streaming step on a mixed example batch and freeze it for inference (CPU)."""
    frames = torch.rand(batch, 3, *input_size)
    previous = torch.rand(batch, *model.state_shape(input_size))
    fresh = torch.zeros(batch, dtype=torch.bool)
    fresh[0] = True
    with torch.no_grad(), warnings.catch_warnings():
        # The attention's 1/sqrt(channels) is traced as a constant: true for a fixed model.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated, not gone: still the fastest CPU path here
        traced = torch.jit.trace(StreamStep(model).eval(), (frames, previous, fresh))
        return torch.jit.optimize_for_inference(traced)


def max_probability_error(a: nn.Module, b: nn.Module, inputs: Iterable[tuple[Tensor, Tensor, Tensor]]) -> float:
    worst = 0.0
    with torch.inference_mode():
        for example in inputs:
            pa, pb = a(*example)[0].float().sigmoid(), b(*example)[0].float().sigmoid()
            worst = max(worst, float((pa - pb).abs().max()))
    return worst


class StepRuntime:
    """The student's streaming step on one device, optimised where that is safe (see the module doc)."""

    def __init__(self, model: STKDStudent, device: torch.device, input_size: tuple[int, int], optimize: bool = True) -> None:
        self.model, self.device, self.input_size = model, device, tuple(input_size)
        self.dtype = torch.float32
        self.channels_last = False
        self._step: nn.Module = StreamStep(model).eval()
        self.mode = "eager"
        if not optimize:
            return
        if device.type == "cuda":
            self._cuda_fp16()
        elif device.type == "cpu":
            self._cpu_graph()

    def _cuda_fp16(self) -> None:
        # A separate half copy: the Predictor's float32 model stays the reference (clips, tests).
        half = STKDStudent(self.model.config).to(self.device)
        half.load_state_dict(self.model.state_dict())
        half = half.eval().half().to(memory_format=torch.channels_last)
        self._step, self.dtype, self.channels_last, self.mode = StreamStep(half).eval(), torch.float16, True, "cuda-fp16"

    def _cpu_graph(self) -> None:
        try:
            graph = trace_step(self.model, self.input_size)
            checks = [self._example(1, fresh_rows=1), self._example(3, fresh_rows=1), self._example(2, fresh_rows=0)]
            error = max_probability_error(graph, self._step, checks)
            if error > TOLERANCE:
                raise RuntimeError(f"the optimised graph differs from eager by {error:.2e} in probability")
        except Exception as error:  # any tracing problem: the eager model still gives correct masks
            log.warning("optimised CPU graph unavailable, running eager: %s: %s", type(error).__name__, error)
            return
        self._step, self.mode = graph, "jit"

    def _example(self, batch: int, fresh_rows: int) -> tuple[Tensor, Tensor, Tensor]:
        generator = torch.Generator().manual_seed(batch)
        frames = torch.rand(batch, 3, *self.input_size, generator=generator)
        previous = torch.rand(batch, *self.model.state_shape(self.input_size), generator=generator)
        fresh = torch.zeros(batch, dtype=torch.bool)
        fresh[:fresh_rows] = True
        return frames, previous, fresh

    def __call__(self, frames: Tensor, previous: Tensor | None = None, fresh: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """frames B,3,H,W float in [0, 1] on the device -> (logits B,1,H,W, state B,C,h,w float32)."""
        frames = frames.to(self.dtype)
        if self.channels_last:
            frames = frames.contiguous(memory_format=torch.channels_last)
        if self.mode == "eager":  # no placeholder inputs needed: the model's own None handling
            logits, state = self._eager(frames, previous, fresh)
        else:
            logits, state = self._step(*full_inputs(self.model, frames, previous, fresh))
        return logits.float(), state.float()

    def _eager(self, frames: Tensor, previous: Tensor | None, fresh: Tensor | None) -> tuple[Tensor, Tensor]:
        output = self.model(frames, previous, fresh)
        return output.logits, output.state

    @torch.inference_mode()
    def warmup(self, batch_sizes: Iterable[int] = (1,)) -> None:
        """Run each batch size twice (first frames, then steady state): TorchScript's profiling
        executor and oneDNN specialise on the first calls of each shape, so clients don't pay that."""
        for batch in batch_sizes:
            frames = torch.rand(batch, 3, *self.input_size, device=self.device)
            _, state = self(frames)
            self(frames, state)
            self(frames, state)
