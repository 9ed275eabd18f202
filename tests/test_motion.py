"""The motion branch: stride-4 matching against a moving average of the earlier frames, carried in the
one state tensor."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distill.finetune import load_initial_weights
from service.model import ModelStore, stkd_student
from service.model.onnx_step import OnnxStep, export_step
from service.model.step import TOLERANCE, StreamStep, step_disagreement
from service.model.store import Manifest

STATE_BUDGET = 64 * 1024  # bytes of state per session at the default input size (issue "Real-world accuracy")


def moving_student(seed: int = 0) -> torch.nn.Module:
    """A student with a motion branch whose cue is not zero (a fresh one adds nothing by design)."""
    torch.manual_seed(seed)
    model = stkd_student(motion_channels=8).eval()
    torch.nn.init.normal_(model.motion.cue.weight, std=0.5)
    return model


def test_the_state_grows_within_budget_and_the_flops_barely_move() -> None:
    plain, moving = stkd_student().eval(), stkd_student(motion_channels=8).eval()
    assert plain.state_shape((352, 352)) == (64, 11, 11)
    assert moving.state_shape((352, 352)) == (128, 11, 11)
    assert STATE_BUDGET >= 4 * 128 * 11 * 11
    from service.model.complexity import count_flops

    assert count_flops(moving) <= 1.15 * count_flops(plain) and count_flops(moving) <= 1.5e9


def camouflaged_clip(frames: int = 6, size: int = 128, speed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """A square cut from the background's own texture, moving `speed` pixels a frame over it (still
    camera): invisible in any one frame. Returns (clip 1,T,3,H,W, the square's mask in the last frame)."""
    generator = torch.Generator().manual_seed(0)
    texture = torch.nn.functional.avg_pool2d(torch.rand(1, 3, 2 * size, 2 * size, generator=generator), 3, 1, 1)
    background, patch = texture[..., :size, :size], texture[..., size : size + 32, size : size + 32]
    clip, mask = [], torch.zeros(size, size)
    for t in range(frames):
        frame, x = background.clone(), 40 + speed * t
        frame[..., 48:80, x : x + 32] = patch
        clip.append(frame)
    mask[48:80, x : x + 32] = 1
    return torch.stack(clip, 1), mask


def test_the_evidence_finds_an_object_that_only_motion_reveals() -> None:
    model = stkd_student(motion_channels=8).eval()
    clip, mask = camouflaged_clip()
    grey = model.motion.grey(clip[0])
    reference = grey[0]
    for t in range(1, len(grey) - 1):
        reference = model.motion.averaged(reference, grey[t])
    gain = model.motion.evidence(grey[-1:], reference[None])[0, 0]
    inside = torch.nn.functional.adaptive_avg_pool2d(mask[None, None], gain.shape)[0, 0] > 0.5
    assert gain[inside].mean() > 5 * gain[~inside].mean()  # the moving square stands out
    still = model.motion.evidence(grey[:1], grey[:1])[0, 0]
    assert still.abs().max() < 1e-6  # a frame against itself: no motion anywhere


@pytest.mark.parametrize("size", [(320, 288), (336, 200)])  # the second is no multiple of 32: padded packing
def test_a_clip_in_one_pass_equals_stepping_frame_by_frame(size: tuple[int, int]) -> None:
    model = moving_student()
    clip = torch.rand(2, 4, 3, *size)
    with torch.no_grad():
        offline = model.forward_clip(clip)
        previous, stepped = None, []
        for t in range(4):
            output = model(clip[:, t], previous)
            previous = output.state
            stepped.append(output.logits)
        assert offline.state.shape[1:] == model.state_shape(size)
        torch.testing.assert_close(torch.stack(stepped, 1), offline.logits.unflatten(0, (2, 4)), atol=1e-5, rtol=0)
        carried = model.forward_clip(clip[:, 2:], offline.state.unflatten(0, (2, 4))[:, 1])  # a later chunk
        torch.testing.assert_close(carried.logits, offline.logits.unflatten(0, (2, 4))[:, 2:].flatten(0, 1),
                                   atol=1e-5, rtol=0)


def test_the_reference_reaches_the_map_and_fresh_rows_ignore_it() -> None:
    model = moving_student()
    frames = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        first = model(frames)
        deep_only = first.state.clone()
        deep_only[:, 64:] = model(torch.rand(2, 3, 128, 128)).state[:, 64:]  # another frame's reference only
        moved = model(frames, deep_only).logits
        assert (moved - first.logits).abs().max() > 1e-4  # the reference alone changes the map
        fresh = model(frames, deep_only, torch.tensor([True, False])).logits
        torch.testing.assert_close(fresh[:1], first.logits[:1], atol=1e-5, rtol=0)


def test_a_branch_of_another_width_is_refused_in_one_line() -> None:
    grown = stkd_student(motion_channels=8)
    with pytest.raises(ValueError, match=r"motion.compare.0.weight \(8, 50, 3, 3\), here \(4, 50, 3, 3\)"):
        load_initial_weights(stkd_student(motion_channels=4), grown.state_dict(), "grown")


def test_the_exported_step_carries_the_motion_state(tmp_path: Path) -> None:
    model = moving_student()
    path = tmp_path / "step.onnx"
    record = export_step(model, (160, 160), path)
    assert record["max_probability_error"] <= TOLERANCE and record["outputs"]["state"] == ["batch", 128, 5, 5]
    rows = {"frames": (3, 160, 160), "previous": model.state_shape((160, 160)), "fresh": ()}
    graph = OnnxStep(path, torch.device("cpu"), rows, threads=1)
    assert step_disagreement(graph, StreamStep(model), model, (160, 160), stream_frames=4) <= TOLERANCE


def test_the_store_round_trips_a_model_with_the_branch(tmp_path: Path) -> None:
    model = moving_student()
    store = ModelStore(tmp_path)
    store.save(model, Manifest("moving", "", {}, (160, 160), "1", ""), step_graph=False)
    loaded, manifest = store.load("moving")
    assert manifest.config["motion_channels"] == 8 and loaded.state_shape((160, 160)) == (128, 5, 5)
    frames = torch.rand(1, 3, 160, 160)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(frames).logits, model(frames).logits, atol=1e-6, rtol=0)


def test_a_smaller_radius_computes_a_subset_of_the_larger_ones_costs() -> None:
    """`evidence_channels` names, in the radius-3 evidence, the shifts a radius-1 branch computes: the
    costs agree exactly, so a narrowed comparison starts from the weights that saw the same inputs."""
    grey, reference = torch.randn(2, 1, 20, 24), torch.randn(2, 1, 20, 24)
    wide, narrow = stkd_student(motion_channels=8).motion, stkd_student(motion_channels=8, motion_radius=1).motion
    channels = type(wide).evidence_channels(3, 1)
    assert channels[0] == 0 and len(channels) == 1 + 9 and channels[1 + 4] == 1 + 24  # gain; the centre: no shift
    costs = [channel - 1 for channel in channels[1:]]
    torch.testing.assert_close(wide.shift_costs(grey, reference)[:, costs], narrow.shift_costs(grey, reference),
                               atol=0, rtol=0)
    assert narrow.compare[0].weight.shape[1] == 10
    with pytest.raises(ValueError, match="cannot be taken"):
        type(wide).evidence_channels(1, 3)


def test_the_store_round_trips_a_smaller_radius(tmp_path: Path) -> None:
    model = stkd_student(motion_channels=8, motion_radius=1).eval()
    store = ModelStore(tmp_path)
    store.save(model, Manifest("narrow", "", {}, (160, 160), "1", ""), step_graph=False)
    loaded, manifest = store.load("narrow")
    assert manifest.config["motion_radius"] == 1 and loaded.motion.radius == 1
    assert "motion_radius" not in stkd_student(motion_channels=8).config.to_dict()  # versions 4-7 manifests unchanged
