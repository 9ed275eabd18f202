"""The serving backends (service.model.runtime) against the eager model they replace, and the exported
step graph (service.model.onnx_step) with its record in the manifest."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch

from service.model import ModelStore, ModelStoreError, Predictor
from service.model.runtime import StepRuntime, resolve_backend
from service.video import open_media

from .servers import max_diff, moving_square_frames

TOLERANCE = 1e-3  # probability, as the issue asks
VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
SHIPPED = Path(__file__).resolve().parents[1] / "model_store"


def runtime(model_store: ModelStore, backend: str) -> tuple[StepRuntime, tuple[int, int]]:
    model, manifest = model_store.load("test-student")
    size = tuple(manifest.input_size)
    graph = model_store.step_graph("test-student", manifest)
    return StepRuntime(model.eval(), torch.device("cpu"), size, backend, graph, threads=1), size  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", ["torchscript", "onnxruntime"])
def test_step_matches_eager_on_first_frames_mixed_batches_and_steady_streams(model_store: ModelStore, backend: str) -> None:
    torch.manual_seed(0)
    eager, size = runtime(model_store, "eager")
    optimised, _ = runtime(model_store, backend)
    assert eager.mode == "eager" and optimised.mode == {"torchscript": "torchscript", "onnxruntime": "onnxruntime-cpu"}[backend]
    with torch.inference_mode():
        first = torch.rand(1, 3, *size)
        (le, se), (lo, so) = eager(first), optimised(first)  # a first frame: no previous at all
        assert torch.allclose(lo.sigmoid(), le.sigmoid(), atol=TOLERANCE, rtol=0)
        assert torch.allclose(so, se, atol=1e-3, rtol=1e-3)
        # A steady stream, each backend carrying its own state for five frames.
        state_e, state_o = se, so
        for _ in range(5):
            frame = torch.rand(1, 3, *size)
            (le, state_e), (lo, state_o) = eager(frame, state_e), optimised(frame, state_o)
            assert torch.allclose(lo.sigmoid(), le.sigmoid(), atol=TOLERANCE, rtol=0)
        # A batch size the graph was not made at, rows 1 and 3 fresh (streams at their first frame).
        frames = torch.rand(5, 3, *size)
        previous = eager(torch.rand(5, 3, *size))[1]
        fresh = torch.tensor([False, True, False, True, False])
        (le, se), (lo, so) = eager(frames, previous, fresh), optimised(frames, previous, fresh)
        assert torch.allclose(lo.sigmoid(), le.sigmoid(), atol=TOLERANCE, rtol=0)
        assert torch.allclose(so, se, atol=1e-3, rtol=1e-3)
        # A fresh row gives what that frame gives alone, whatever its row of `previous` held.
        alone = eager(frames[1:2])[0]
        assert torch.allclose(lo[1:2].sigmoid(), alone.sigmoid(), atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("backend", ["torchscript", "onnxruntime"])
def test_predictor_masks_within_one_level_of_eager(model_store: ModelStore, backend: str) -> None:
    frames = moving_square_frames(4, seed=3)
    eager = Predictor.from_store("test-student", model_store, device="cpu")
    optimised = Predictor.from_store("test-student", model_store, device="cpu", backend=backend, threads=1)
    assert optimised.runtime.backend == backend
    masks_e, states_e = eager.step_batch(frames[:2], [None, None])
    masks_o, states_o = optimised.step_batch(frames[:2], [None, None])
    assert all(max_diff(a, b) <= 1 for a, b in zip(masks_e, masks_o, strict=True))
    # Mixed: one stream continues, one starts, one still image.
    mixed_e, _ = eager.step_batch(frames[2:] + frames[:1], [states_e[0], None, states_e[1]])
    mixed_o, next_o = optimised.step_batch(frames[2:] + frames[:1], [states_o[0], None, states_o[1]])
    assert all(max_diff(a, b) <= 1 for a, b in zip(mixed_e, mixed_o, strict=True))
    assert len(next_o) == 3 and all(np.isfinite(carried["features"]).all() for carried in next_o)


def test_eager_backend_is_the_model_itself(model_store: ModelStore) -> None:
    frame = moving_square_frames(1, seed=5)[0]
    predictor = Predictor.from_store("test-student", model_store, device="cpu", backend="eager")
    with torch.inference_mode():
        from service.model.processing import frames_to_tensor, probabilities_to_masks

        logits = predictor.model(frames_to_tensor([frame], predictor.input_size)).logits
        expected = probabilities_to_masks(torch.sigmoid(logits), [frame.shape[:2]])[0]
    assert predictor.runtime.mode == "eager" and np.array_equal(predictor.predict_image(frame), expected)


def test_auto_picks_onnxruntime_on_cpu_when_the_model_has_its_graph(model_store: ModelStore, tmp_path: Path) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_backend("auto", cpu, tmp_path / "step.onnx") == "onnxruntime"
    assert resolve_backend("auto", cpu, None) == "torchscript"
    assert resolve_backend("auto", cuda, tmp_path / "step.onnx") == "torchscript"  # until a GPU run measures it
    assert Predictor.from_store("test-student", model_store, device="cpu", backend="auto").runtime.mode == "onnxruntime-cpu"


def test_the_export_is_recorded_and_verified(model_store: ModelStore, tmp_path: Path) -> None:
    """The manifest records the graph's hash, opset and shapes; a changed file or a missing one is refused."""
    model, manifest = model_store.load("test-student")
    record = manifest.step_graph
    state = list(model.state_shape(manifest.input_size))
    assert record["file"] == "step.onnx" and record["format"] == "onnx opset 17"
    assert record["inputs"] == {"frames": ["batch", 3, 128, 128], "previous": ["batch", *state], "fresh": ["batch"]}
    assert record["outputs"]["state"] == ["batch", *state] and 0 <= record["max_probability_error"] <= TOLERANCE

    store = ModelStore(tmp_path)
    store.save(model, manifest)
    graph = tmp_path / "test-student" / "step.onnx"
    graph.write_bytes(graph.read_bytes()[:-1] + b"\0")
    with pytest.raises(ModelStoreError, match="does not match the sha256"):
        Predictor.from_store("test-student", store, device="cpu", backend="onnxruntime")
    graph.unlink()
    with pytest.raises(ModelStoreError, match=r"step graph 'step\.onnx' is missing"):
        Predictor.from_store("test-student", store, device="cpu", backend="auto")
    assert store.add_step_graph("test-student")["sha256"] == record["sha256"]  # the export is deterministic
    assert Predictor.from_store("test-student", store, device="cpu", backend="onnxruntime").runtime.backend == "onnxruntime"


def test_a_model_without_a_graph_runs_torchscript_on_auto_and_refuses_onnxruntime(
        model_store: ModelStore, tmp_path: Path) -> None:
    model, manifest = model_store.load("test-student")
    store = ModelStore(tmp_path)
    store.save(model, manifest, step_graph=False)
    assert "step_graph" not in json.loads((tmp_path / "test-student" / "manifest.json").read_text()) or not manifest.step_graph
    assert Predictor.from_store("test-student", store, device="cpu").runtime.mode == "eager"
    assert Predictor.from_store("test-student", store, device="cpu", backend="auto").runtime.mode == "torchscript"
    with pytest.raises(RuntimeError, match="needs the model's exported step graph"):
        Predictor.from_store("test-student", store, device="cpu", backend="onnxruntime")


@pytest.mark.skipif(not VTEST.is_file(), reason="Debian's opencv-doc sample vtest.avi is not installed")
def test_shipped_model_streams_vtest_within_one_grey_level_of_eager() -> None:
    """The default model, streamed over 60 frames of a real video: ONNX Runtime's masks are the eager
    model's to within one grey level, every frame, with each backend carrying its own state."""
    store = ModelStore(SHIPPED)
    eager = Predictor.from_store("vsod-student", store, device="cpu", backend="eager")
    graph = Predictor.from_store("vsod-student", store, device="cpu", backend="onnxruntime", threads=2)
    carried_e = carried_o = None
    worst = 0
    with open_media(VTEST) as media:
        frames = [frame for _, frame in islice(media.frames(), 60)]
    for frame in frames:
        mask_e, carried_e = eager.step(frame, carried_e)
        mask_o, carried_o = graph.step(frame, carried_o)
        worst = max(worst, max_diff(mask_e, mask_o))
    assert worst <= 1, f"masks differ by {worst} grey levels"
