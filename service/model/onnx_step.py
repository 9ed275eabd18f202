"""The streaming step as an ONNX graph with explicit state, and ONNX Runtime running it.

    record = export_step(model, input_size, folder / STEP_GRAPH)   # at export: write, check, describe
    step = OnnxStep(folder / STEP_GRAPH, device, rows, threads=2)    # in the server (rows: input shapes)
    logits, state = step(frames, previous, fresh)                    # torch tensors in and out

The graph is `StreamStep` (runtime.py) exported with `torch.onnx.export` at opset 17: inputs
`frames` (B,3,H,W RGB in [0, 1]), `previous` (B,C,h,w, the last frame's state) and `fresh` (B bools:
rows at a stream's first frame, which ignore their row of `previous`); outputs `logits` (B,1,H,W) and
`state` (B,C,h,w, the next frame's `previous`). Only the batch is dynamic: the input size is the
model's, as the manifest records. Nothing in the graph is sequential, so any runtime that can run
a convolutional network can serve streams: the state is just another input and output.

`export_step` checks the graph against the eager model on first frames, a mixed batch and a steady
stream before it returns. What it returns (opset, shapes, the largest probability difference found)
goes into the manifest with the file's sha256, which the store verifies before the server opens it.
"""

from __future__ import annotations

import copy
import ctypes.util
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch
from torch import Tensor

from .step import TOLERANCE, StreamStep, agreement_examples, step_disagreement
from .student import STKDStudent

STEP_GRAPH = "step.onnx"
OPSET = 17
INPUTS = ("frames", "previous", "fresh")
OUTPUTS = ("logits", "state")


class StepGraphError(RuntimeError):
    """The exported graph is missing, does not match its record, or disagrees with the model."""


def export_step(model: STKDStudent, input_size: tuple[int, int], path: Path) -> dict[str, Any]:
    """Export the model's streaming step to `path`, check it against eager, and describe it for the
    manifest (the store adds the file's name and sha256)."""
    if next(model.parameters()).device.type != "cpu":  # exported and checked on the CPU; the caller's copy stays put
        model = copy.deepcopy(model).cpu()
    model = model.eval()
    height, width = input_size
    state = model.state_shape(input_size)
    example = next(iter(agreement_examples(model, input_size)))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on constants that are constant for a fixed model
        torch.onnx.export(
            StreamStep(model).eval(), example, str(path), input_names=list(INPUTS), output_names=list(OUTPUTS),
            dynamic_axes={name: {0: "batch"} for name in (*INPUTS, *OUTPUTS)}, opset_version=OPSET, dynamo=False,
        )
    graph = OnnxStep(path, torch.device("cpu"), {}, threads=1)
    error = step_disagreement(graph, StreamStep(model).eval(), model, input_size)
    if error > TOLERANCE:
        path.unlink(missing_ok=True)
        raise StepGraphError(f"the exported step differs from the eager model by {error:.2e} in probability")
    return {
        "format": f"onnx opset {OPSET}",
        "inputs": {"frames": ["batch", 3, height, width], "previous": ["batch", *state], "fresh": ["batch"]},
        "outputs": {"logits": ["batch", 1, height, width], "state": ["batch", *state]},
        "max_probability_error": error,
        "exported_with": f"torch {torch.__version__}",
    }


MAX_BATCH = 64  # the largest batch TensorRT builds its engine for (the engine batches 8 by default)


def _providers(device: torch.device, rows: dict[str, tuple[int, ...]]) -> list[str | tuple[str, dict[str, Any]]]:
    """CPU: the CPU provider. CUDA: TensorRT first where its library is installed (float16, one
    engine for every batch size up to MAX_BATCH, cached so only the first start builds it), then CUDA,
    on the predictor's GPU. `rows` are the inputs' shapes without the batch dimension."""
    if device.type != "cuda":
        return ["CPUExecutionProvider"]
    available = onnxruntime.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise StepGraphError("ONNX Runtime on CUDA needs onnxruntime-gpu (pip install onnxruntime-gpu)")
    index = device.index or 0
    providers: list[str | tuple[str, dict[str, Any]]] = []
    # onnxruntime-gpu lists TensorRT whether or not TensorRT itself is installed: look for its library.
    if "TensorrtExecutionProvider" in available and ctypes.util.find_library("nvinfer"):
        def profile(batch: int) -> str:
            return ",".join(f"{name}:{'x'.join(map(str, (batch, *shape)))}" for name, shape in rows.items())

        providers.append(("TensorrtExecutionProvider", {
            "device_id": index, "trt_fp16_enable": True, "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(Path(tempfile.gettempdir()) / "vsod-tensorrt"),
            # Without explicit profiles TensorRT rebuilds its engine each time a larger batch appears.
            "trt_profile_min_shapes": profile(1), "trt_profile_opt_shapes": profile(8),
            "trt_profile_max_shapes": profile(MAX_BATCH),
        }))
    return [*providers, ("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]


class OnnxStep:
    """An ONNX Runtime session over the step graph, called like `StreamStep` (torch tensors).

    On CPU the tensors cross as numpy views (no copies). On CUDA, IO binding hands ONNX Runtime the
    torch tensors' device memory, so frames and state never leave the GPU (UNTESTED here: no GPU;
    bench/gpu_check.sh runs it). `rows` gives each input's shape without the batch dimension. The
    store verifies the file against its manifest before this opens it.
    """

    def __init__(self, path: Path, device: torch.device, rows: dict[str, tuple[int, ...]],
                 threads: int | None = None) -> None:
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # warnings about unused initialisers and the like are noise here
        if threads:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # The server's OpenMP policy (service.process) holds for ONNX Runtime's pool too: on a busy
        # machine, spinning threads steal the cores that decode frames.
        if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.device = device
        self.session = onnxruntime.InferenceSession(str(path), options, providers=_providers(device, rows))
        self.provider = self.session.get_providers()[0]
        if device.type == "cuda" and self.provider not in ("TensorrtExecutionProvider", "CUDAExecutionProvider"):
            # ONNX Runtime falls back to the CPU when CUDA's libraries fail to load; IO binding of
            # device memory would then hand a CPU session GPU pointers.
            raise StepGraphError("ONNX Runtime could not start its CUDA provider (are CUDA and cuDNN installed?)")

    def __call__(self, frames: Tensor, previous: Tensor, fresh: Tensor) -> tuple[Tensor, Tensor]:
        if self.device.type == "cuda":
            return self._bound(frames, previous, fresh)
        feeds = {"frames": _numpy(frames), "previous": _numpy(previous), "fresh": _numpy(fresh)}
        logits, state = self.session.run(list(OUTPUTS), feeds)
        return torch.from_numpy(logits), torch.from_numpy(state)

    def _bound(self, frames: Tensor, previous: Tensor, fresh: Tensor) -> tuple[Tensor, Tensor]:
        """CUDA: inputs and outputs bound to torch's device buffers (IO binding)."""
        inputs = {"frames": frames.float().contiguous(), "previous": previous.float().contiguous(),
                  "fresh": fresh.contiguous()}  # held here until the run is over
        outputs = {"logits": torch.empty((frames.shape[0], 1, *frames.shape[-2:]), device=frames.device),
                   "state": torch.empty(previous.shape, device=frames.device)}
        binding = self.session.io_binding()
        index = frames.device.index or 0
        for name, tensor in inputs.items():
            kind = np.bool_ if tensor.dtype == torch.bool else np.float32
            binding.bind_input(name, "cuda", index, kind, list(tensor.shape), tensor.data_ptr())
        for name, tensor in outputs.items():
            binding.bind_output(name, "cuda", index, np.float32, list(tensor.shape), tensor.data_ptr())
        # ONNX Runtime works on its own CUDA stream: what torch queued (these inputs) must be done first.
        torch.cuda.current_stream(frames.device).synchronize()
        self.session.run_with_iobinding(binding)
        return outputs["logits"], outputs["state"]


def _numpy(tensor: Tensor) -> np.ndarray:
    return tensor.detach().cpu().contiguous().numpy()
