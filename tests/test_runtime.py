"""The optimised inference path (service.model.runtime) against the eager model it replaces."""

from __future__ import annotations

import numpy as np
import torch

from service.model import ModelStore, Predictor
from service.model.runtime import StepRuntime

from .servers import max_diff, moving_square_frames

TOLERANCE = 1e-3  # probability, as the issue asks


def runtimes(model_store: ModelStore) -> tuple[StepRuntime, StepRuntime, tuple[int, int]]:
    model, manifest = model_store.load("test-student")
    model.eval()
    size = tuple(manifest.input_size)
    return StepRuntime(model, torch.device("cpu"), size, optimize=False), StepRuntime(
        model, torch.device("cpu"), size, optimize=True
    ), size  # type: ignore[return-value]


def test_optimised_step_matches_eager_at_batch_one_and_in_a_mixed_batch(model_store: ModelStore) -> None:
    torch.manual_seed(0)
    eager, optimised, size = runtimes(model_store)
    assert optimised.mode == "jit" and eager.mode == "eager"
    with torch.inference_mode():
        first = torch.rand(1, 3, *size)
        (le, se), (lo, so) = eager(first), optimised(first)  # a first frame: no previous at all
        assert torch.allclose(lo.sigmoid(), le.sigmoid(), atol=TOLERANCE, rtol=0)
        assert torch.allclose(so, se, atol=1e-3, rtol=1e-3)
        steady = torch.rand(1, 3, *size)
        assert torch.allclose(optimised(steady, se)[0].sigmoid(), eager(steady, se)[0].sigmoid(), atol=TOLERANCE, rtol=0)
        # A batch size the graph was not traced at, rows 1 and 3 fresh (streams at their first frame).
        frames = torch.rand(5, 3, *size)
        previous = eager(torch.rand(5, 3, *size))[1]
        fresh = torch.tensor([False, True, False, True, False])
        (le, se), (lo, so) = eager(frames, previous, fresh), optimised(frames, previous, fresh)
        assert torch.allclose(lo.sigmoid(), le.sigmoid(), atol=TOLERANCE, rtol=0)
        assert torch.allclose(so, se, atol=1e-3, rtol=1e-3)
        # A fresh row gives what that frame gives alone, whatever its row of `previous` held.
        alone = eager(frames[1:2])[0]
        assert torch.allclose(lo[1:2].sigmoid(), alone.sigmoid(), atol=TOLERANCE, rtol=0)


def test_optimised_predictor_masks_within_one_level_of_eager(model_store: ModelStore) -> None:
    frames = moving_square_frames(4, seed=3)
    eager = Predictor(*model_store.load("test-student"), device="cpu")
    optimised = Predictor(*model_store.load("test-student"), device="cpu", optimize=True)
    assert optimised.runtime.mode == "jit"
    masks_e, states_e = eager.step_batch(frames[:2], [None, None])
    masks_o, states_o = optimised.step_batch(frames[:2], [None, None])
    assert all(max_diff(a, b) <= 1 for a, b in zip(masks_e, masks_o))
    # Mixed: one stream continues, one starts, one still image.
    mixed_e, _ = eager.step_batch(frames[2:] + frames[:1], [states_e[0], None, states_e[1]])
    mixed_o, next_o = optimised.step_batch(frames[2:] + frames[:1], [states_o[0], None, states_o[1]])
    assert all(max_diff(a, b) <= 1 for a, b in zip(mixed_e, mixed_o))
    assert len(next_o) == 3 and all(np.isfinite(carried["features"]).all() for carried in next_o)


def test_optimize_off_is_the_eager_model(model_store: ModelStore) -> None:
    frame = moving_square_frames(1, seed=5)[0]
    predictor = Predictor(*model_store.load("test-student"), device="cpu", optimize=False)
    model = predictor.model
    with torch.inference_mode():
        from service.model.processing import frames_to_tensor, probabilities_to_masks

        logits = model(frames_to_tensor([frame], predictor.input_size)).logits
        expected = probabilities_to_masks(torch.sigmoid(logits), [frame.shape[:2]])[0]
    assert predictor.runtime.mode == "eager" and np.array_equal(predictor.predict_image(frame), expected)
