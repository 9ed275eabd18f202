"""How the student's streaming step runs on a device: the backends, and how `auto` picks one.

    runtime = StepRuntime(model, device, input_size, backend="auto", graph=folder / "step.onnx")
    logits, state = runtime(frames, previous, fresh)   # previous/fresh may be None

One call is `StreamStep` (step.py): the frames and the previous state in, the logits and the next
state out. The backends (`VSOD_BACKEND`):

- `eager`: the module in float32, the reference every other backend is checked against.
- `onnxruntime`: the step graph exported beside the weights (onnx_step.py), in ONNX Runtime: its
  CPU provider with the server's thread count, or its TensorRT/CUDA providers with IO binding.
- `torchscript`: on CPU the step traced with *every* input present (previous state and a `fresh` row
  mask) and frozen by `torch.jit.optimize_for_inference` (batch norm folded, oneDNN layouts). On CUDA
  torch's optimised path is not a TorchScript graph but the module in float16 and channels_last
  (tensor cores), the state handed back as float32: mode `cuda-fp16`.
- `auto`: on CPU, `onnxruntime` when the model has an exported graph, else `torchscript`: ONNX
  Runtime ran the step fastest on the development CPU (bench/model_speed.py, bench/RESULTS.md). On
  CUDA, `torchscript` (float16) until bench/gpu_check.sh has measured ONNX Runtime's providers there.

A batch of first frames is fed to the graphs as zeros with every row fresh, which the model resolves
with `torch.where` to exactly what `previous=None` computes, so one graph serves first frames, mixed
batches and steady streams at any batch size. The traced TorchScript graph (1e-3 in probability) and
the float16 copy (1e-2) are checked against eager at start-up (`step_disagreement`) and fall back to
eager, with a warning, if they disagree or cannot be built; the ONNX graph was checked (1e-3, on the
CPU) when it was exported, and its hash is checked at load.

No bfloat16 anywhere: on CPUs without native bf16 it is far slower than float32 (bench/RESULTS.md).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor

from ..backends import BACKENDS, Backend
from .onnx_step import OnnxStep
from .step import HALF_TOLERANCE, TOLERANCE, Step, StreamStep, full_inputs, step_disagreement
from .student import STKDStudent

log = logging.getLogger("vsod.runtime")


def trace_step(model: STKDStudent, input_size: tuple[int, int], batch: int = 2) -> torch.jit.ScriptModule:
    """Trace the streaming step on a mixed example batch and freeze it for inference (CPU)."""
    frames = torch.rand(batch, 3, *input_size)
    previous = torch.rand(batch, *model.state_shape(input_size))
    fresh = torch.zeros(batch, dtype=torch.bool)
    fresh[0] = True
    with torch.no_grad(), warnings.catch_warnings():
        # The attention's 1/sqrt(channels) is traced as a constant: true for a fixed model.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated, not gone
        traced = torch.jit.trace(StreamStep(model).eval(), (frames, previous, fresh))
        return torch.jit.optimize_for_inference(traced)


def resolve_backend(backend: Backend, device: torch.device, graph: Path | None) -> Backend:
    """The backend `auto` stands for on this device, given whether the model has an exported graph."""
    if backend != "auto":
        return backend
    if device.type == "cpu" and graph is not None:
        return "onnxruntime"
    return "torchscript"


class StepRuntime:
    """The student's streaming step on one device, through one backend (see the module doc).

    `mode` says what runs: eager, torchscript, cuda-fp16 or onnxruntime-<provider>. `graph` is the
    model's verified step graph (None: it has none, and `onnxruntime` cannot be chosen)."""

    def __init__(self, model: STKDStudent, device: torch.device, input_size: tuple[int, int],
                 backend: Backend = "eager", graph: Path | None = None, threads: int | None = None) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
        self.model, self.device = model, device
        self.input_size: tuple[int, int] = (int(input_size[0]), int(input_size[1]))
        self.dtype = torch.float32
        self.channels_last = False
        self._step: Step = StreamStep(model).eval()
        self.mode = "eager"
        self.backend = resolve_backend(backend, device, graph)
        if self.backend == "onnxruntime":
            if graph is None:
                raise RuntimeError("backend onnxruntime needs the model's exported step graph "
                                   "(vsod-train export writes it; vsod-train export-graph NAME adds it to a stored model)")
            rows = {"frames": (3, *self.input_size), "previous": model.state_shape(self.input_size), "fresh": ()}
            step = OnnxStep(graph, device, rows, threads)
            self._step, self.mode = step, f"onnxruntime-{step.provider.removesuffix('ExecutionProvider').lower()}"
        elif self.backend == "torchscript" and device.type == "cuda":
            self._cuda_fp16()
        elif self.backend == "torchscript":
            self._cpu_graph()

    def _cuda_fp16(self) -> None:
        # A separate half copy: the Predictor's float32 model stays the reference (clips, tests).
        half = STKDStudent(self.model.config).to(self.device)
        half.load_state_dict(self.model.state_dict())
        half = half.eval().half().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        step = StreamStep(half).eval()

        def half_step(frames: Tensor, previous: Tensor, fresh: Tensor) -> tuple[Tensor, Tensor]:
            return step(frames.half().contiguous(memory_format=torch.channels_last), previous.half(), fresh)

        error = step_disagreement(half_step, self._step, self.model, self.input_size, device=self.device)
        if error > HALF_TOLERANCE:
            log.warning("float16 differs from float32 by %.2e in probability: running eager float32", error)
            self.backend = "eager"
            return
        self._step, self.dtype, self.channels_last, self.mode = step, torch.float16, True, "cuda-fp16"

    def _cpu_graph(self) -> None:
        try:
            graph = trace_step(self.model, self.input_size)
            error = step_disagreement(graph, self._step, self.model, self.input_size)
            if error > TOLERANCE:
                raise RuntimeError(f"the optimised graph differs from eager by {error:.2e} in probability")
        except Exception as error:  # noqa: BLE001 - any tracing problem: the eager model still gives correct masks
            log.warning("optimised CPU graph unavailable, running eager: %s: %s", type(error).__name__, error)
            self.backend = "eager"
            return
        self._step, self.mode = graph, "torchscript"

    def __call__(self, frames: Tensor, previous: Tensor | None = None, fresh: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """frames B,3,H,W float in [0, 1] on the device -> (logits B,1,H,W, state B,C,h,w float32)."""
        frames = frames.to(self.dtype)
        if self.channels_last:
            frames = frames.contiguous(memory_format=torch.channels_last)
        if self.mode == "eager":  # no placeholder inputs needed: the model's own None handling
            output = self.model(frames, previous, fresh)
            logits, state = output.logits, output.state
        else:
            logits, state = self._step(*full_inputs(self.model, frames, previous, fresh))
        return logits.float(), state.float()

    @torch.inference_mode()
    def warmup(self, batch_sizes: Iterable[int] = (1,)) -> None:
        """Run each batch size twice (first frames, then steady state): TorchScript's profiling
        executor, oneDNN and ONNX Runtime's allocator specialise on the first calls of each shape,
        so clients don't pay that."""
        for batch in batch_sizes:
            frames = torch.rand(batch, 3, *self.input_size, device=self.device)
            _, state = self(frames)
            self(frames, state)
            self(frames, state)

