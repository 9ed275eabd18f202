"""The CUDA backends against the float32 model on the CPU: float16 (`torchscript` on CUDA, mode
cuda-fp16), ONNX Runtime's CUDA provider and, where it loads, TensorRT. Skipped without a GPU;
`bench/gpu_check.sh` runs them (`pytest -m cuda tests/test_cuda.py`).

Which model each check uses, and why: the random test student (`model_store`, "test-student")
amplifies rounding layer after layer (a random network is badly conditioned: float16 rounding,
emulated on the CPU, moves its probabilities by up to 0.6), so float16 and TF32 (which Ampere and
later GPUs use for float32 convolutions by default, with float16's 10-bit mantissa) are compared
with float32 on the shipped, trained model, whose masks they must reproduce to within a level. The
test student serves the checks where precision plays no part: devices, dtypes and shapes, and the
float32 eager model on CUDA (TF32 off) against the CPU at the CPU backends' 1e-3.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from service.model import ModelStore, Predictor
from service.model.processing import frames_to_tensor
from service.model.runtime import StepRuntime

from .conftest import TEST_MODEL
from .devices import float32_exact
from .servers import moving_square_frames

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU with CUDA"),
]

CUDA = torch.device("cuda")
SHIPPED = ModelStore(Path(__file__).resolve().parents[1] / "model_store")
SHIPPED_MODEL = "vsod-student"
FLOAT32_TOLERANCE = 1e-3  # probability: what the CPU backends meet (tests/test_runtime.py)
REDUCED_TOLERANCE = 2e-2  # probability, float16 or TF32 vs float32 on the trained model: a few times the rounding seen
STRAY_SHARE = 1e-3  # share of pixels whose 8-bit mask level may move by more than one
MODES = {"eager": "eager", "torchscript": "cuda-fp16", "onnxruntime": "onnxruntime-cuda"}
BACKENDS = list(MODES)


@pytest.fixture
def backend_on_cuda(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The parametrised backend; for onnxruntime, ONNX Runtime's CUDA provider alone (TensorRT, if
    it is installed, has its own test: it builds an engine per input shape, minutes in all)."""
    backend: str = request.param
    if backend == "onnxruntime":
        import onnxruntime

        available = onnxruntime.get_available_providers()
        if "CUDAExecutionProvider" not in available:
            pytest.skip(f"ONNX Runtime has no CUDA provider (onnxruntime-gpu not installed): {available}")
        monkeypatch.setattr(onnxruntime, "get_available_providers",
                            lambda: [p for p in available if p != "TensorrtExecutionProvider"])
    return backend


def cuda_runtime(store: ModelStore, name: str, backend: str) -> StepRuntime:
    """The runtime a CUDA server builds for `backend` (the model moved to the GPU first, as Predictor does)."""
    model, manifest = store.load(name)
    graph = store.step_graph(name, manifest)
    return StepRuntime(model.eval().to(CUDA), CUDA, tuple(manifest.input_size), backend, graph)  # type: ignore[arg-type]


def cpu_reference(store: ModelStore, name: str) -> tuple[StepRuntime, tuple[int, int]]:
    model, manifest = store.load(name)
    size = tuple(manifest.input_size)
    return StepRuntime(model.eval(), torch.device("cpu"), size, "eager"), size  # type: ignore[arg-type, return-value]


def video(size: tuple[int, int], count: int, streams: int) -> Tensor:
    """count x streams frames (moving squares, one seed per stream) as model inputs: T,B,3,H,W on the CPU."""
    per_stream = [frames_to_tensor(moving_square_frames(count, 144, 192, seed=seed), size) for seed in range(streams)]
    return torch.stack(per_stream, dim=1)


def side_by_side(runtime: StepRuntime, reference: StepRuntime, size: tuple[int, int], count: int,
                 streams: int) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """`count` steps of `streams` streams (`video`) through the GPU runtime and the CPU reference, each
    carrying its own state: per step the GPU's logits and state, then the CPU's."""
    state = expected_state = None
    for frames in video(size, count, streams):
        logits, state = runtime(frames.to(CUDA), state)
        expected, expected_state = reference(frames, expected_state)
        yield logits, state, expected, expected_state


def assert_agrees(logits: Tensor, reference: Tensor, tolerance: float) -> None:
    """Probabilities within `tolerance`, and 8-bit masks within one level but for a few stray pixels."""
    p, q = logits.detach().float().cpu().sigmoid(), reference.detach().float().cpu().sigmoid()
    error = float((p - q).abs().max())
    levels = ((p * 255).round() - (q * 255).round()).abs()
    stray = float((levels > 1).float().mean())
    assert error <= tolerance and stray <= STRAY_SHARE, f"max probability error {error:.2e}, stray pixels {stray:.2e}"


@pytest.mark.parametrize("backend_on_cuda", BACKENDS, indirect=True)
def test_streams_match_float32_cpu_frame_by_frame(backend_on_cuda: str) -> None:
    """Two streams from their first frame on, each backend carrying its own state on the GPU."""
    runtime = cuda_runtime(SHIPPED, SHIPPED_MODEL, backend_on_cuda)
    assert runtime.mode == MODES[backend_on_cuda]
    reference, size = cpu_reference(SHIPPED, SHIPPED_MODEL)
    with torch.inference_mode():
        for logits, state, expected, _ in side_by_side(runtime, reference, size, 6, streams=2):
            assert_agrees(logits, expected, REDUCED_TOLERANCE)
            assert state.device.type == "cuda"


@pytest.mark.parametrize("backend_on_cuda", BACKENDS, indirect=True)
def test_mixed_batch_rows_match_their_own_streams(backend_on_cuda: str) -> None:
    """Rows 1 and 3 start a stream (their `previous` row is ignored), the others continue theirs."""
    runtime = cuda_runtime(SHIPPED, SHIPPED_MODEL, backend_on_cuda)
    reference, size = cpu_reference(SHIPPED, SHIPPED_MODEL)
    first, second = video(size, 2, streams=5)
    fresh = torch.tensor([False, True, False, True, False])
    with torch.inference_mode():
        _, previous = reference(first)
        expected, expected_state = reference(second, previous, fresh)
        logits, state = runtime(second.to(CUDA), previous.to(CUDA), fresh.to(CUDA))
        assert_agrees(logits, expected, REDUCED_TOLERANCE)
        assert torch.allclose(state.cpu(), expected_state, atol=5e-2, rtol=2e-2)
        alone, _ = reference(second[1:2])  # a fresh row is that frame alone, whatever its previous row held
        assert_agrees(logits[1:2], alone, REDUCED_TOLERANCE)
        continued, _ = reference(second[2:3], previous[2:3])
        assert_agrees(logits[2:3], continued, REDUCED_TOLERANCE)


@pytest.mark.parametrize("backend_on_cuda", BACKENDS, indirect=True)
def test_state_stays_on_the_device_in_float32(model_store: ModelStore, backend_on_cuda: str) -> None:
    runtime = cuda_runtime(model_store, TEST_MODEL, backend_on_cuda)
    model, manifest = model_store.load(TEST_MODEL)
    size = tuple(manifest.input_size)
    state_shape = (3, *model.state_shape(size))  # type: ignore[arg-type]
    with torch.inference_mode():
        frames = torch.rand(3, 3, *size, device=CUDA)
        logits, state = runtime(frames)
        for fresh in (None, torch.tensor([False, True, False], device=CUDA), None):
            assert logits.device.type == state.device.type == "cuda"
            assert logits.dtype == state.dtype == torch.float32  # float16 inside stays inside
            assert tuple(logits.shape) == (3, 1, *size) and tuple(state.shape) == state_shape
            assert bool(torch.isfinite(logits).all()) and bool(torch.isfinite(state).all())
            logits, state = runtime(frames, state, fresh)


@pytest.mark.parametrize("backend_on_cuda", BACKENDS, indirect=True)
def test_predictor_on_cuda_gives_the_cpu_masks_in_mixed_batches(backend_on_cuda: str) -> None:
    """What the server runs: Predictor.step_batch with a stream continuing, one starting, one more continuing."""
    cpu = Predictor.from_store(SHIPPED_MODEL, SHIPPED, device="cpu", backend="eager")
    gpu = Predictor.from_store(SHIPPED_MODEL, SHIPPED, device="cuda", backend=backend_on_cuda)  # type: ignore[arg-type]
    assert gpu.runtime.mode == MODES[backend_on_cuda]
    a, b = moving_square_frames(2, 144, 192, seed=7), moving_square_frames(2, 144, 192, seed=8)
    masks_cpu, carried_cpu = cpu.step_batch([a[0], b[0]], [None, None])
    masks_gpu, carried_gpu = gpu.step_batch([a[0], b[0]], [None, None])
    mixed = [a[1], a[0], b[1]]  # stream a continues, a new stream starts on a's first frame, b continues
    mixed_cpu, next_cpu = cpu.step_batch(mixed, [carried_cpu[0], None, carried_cpu[1]])
    mixed_gpu, next_gpu = gpu.step_batch(mixed, [carried_gpu[0], None, carried_gpu[1]])
    for expected, got in zip(masks_cpu + mixed_cpu, masks_gpu + mixed_gpu, strict=True):
        assert expected.shape == got.shape == (144, 192)
        stray = float((np.abs(expected.astype(np.int16) - got.astype(np.int16)) > 1).mean())
        assert stray <= STRAY_SHARE, f"{stray:.2e} of the mask pixels moved by more than one level"
    for state_cpu, state_gpu in zip(next_cpu, next_gpu, strict=True):
        assert state_gpu["features"].dtype == np.float32 and state_gpu["features"].shape == state_cpu["features"].shape
        assert np.allclose(state_gpu["features"], state_cpu["features"], atol=5e-2, rtol=2e-2)


def test_eager_float32_on_cuda_matches_the_cpu(model_store: ModelStore) -> None:
    """With TF32 off the GPU's float32 is the CPU's, to the CPU backends' tolerance, even for the
    badly conditioned test student: what the reduced tolerances above allow is precision, not plumbing."""
    runtime = cuda_runtime(model_store, TEST_MODEL, "eager")
    reference, size = cpu_reference(model_store, TEST_MODEL)
    with torch.inference_mode(), float32_exact():
        for logits, state, expected, expected_state in side_by_side(runtime, reference, size, 4, streams=2):
            assert float((logits.cpu().sigmoid() - expected.sigmoid()).abs().max()) <= FLOAT32_TOLERANCE
            assert torch.allclose(state.cpu(), expected_state, atol=1e-3, rtol=1e-3)


def test_tensorrt_when_installed_matches_float32_cpu() -> None:
    """`onnxruntime` as a server builds it where TensorRT loads (its provider comes first)."""
    import onnxruntime

    if "TensorrtExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("ONNX Runtime has no TensorRT provider")
    runtime = cuda_runtime(SHIPPED, SHIPPED_MODEL, "onnxruntime")
    if runtime.mode != "onnxruntime-tensorrt":
        pytest.skip(f"TensorRT provider listed but not loadable here: the session runs {runtime.mode}")
    reference, size = cpu_reference(SHIPPED, SHIPPED_MODEL)
    with torch.inference_mode():
        for logits, _, expected, _ in side_by_side(runtime, reference, size, 3, streams=1):
            assert_agrees(logits, expected, REDUCED_TOLERANCE)
