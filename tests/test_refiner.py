"""The detail refiner: the decoder's stride-4 map corrected at stride 2 from the frame itself."""

from __future__ import annotations

from pathlib import Path

import torch

from distill.losses import saliency_loss
from service.model import ModelStore, stkd_student
from service.model.complexity import count_flops
from service.model.onnx_step import OnnxStep, export_step
from service.model.step import TOLERANCE, StreamStep, step_disagreement
from service.model.store import Manifest


def refining_student(seed: int = 0) -> torch.nn.Module:
    """A student with a motion branch and a refiner whose correction is not zero (a fresh one adds nothing)."""
    torch.manual_seed(seed)
    model = stkd_student(motion_channels=8, refiner_channels=8).eval()
    torch.nn.init.normal_(model.refiner.correction.weight, std=0.5)
    return model


def test_the_final_map_comes_from_stride_2_and_the_cost_is_small() -> None:
    model = refining_student()
    with torch.no_grad():
        output = model(torch.rand(2, 3, 160, 192))
    assert [tuple(side.shape[-2:]) for side in output.side_logits] == [(10, 12), (20, 24), (40, 48), (80, 96)]
    assert output.logits.shape == (2, 1, 160, 192)
    plain = stkd_student(motion_channels=8)
    assert count_flops(plain) < count_flops(model) <= 1.1 * count_flops(plain)
    assert model.state_shape((160, 192)) == plain.state_shape((160, 192))  # it carries nothing between frames


def test_the_refiner_sees_the_frame_and_learns_what_the_coarse_map_cannot() -> None:
    """A one-pixel-wide line is invisible on the stride-4 grid; a refiner trained on its own at stride 2
    (everything else frozen) finds it, so the correction carries detail from the frame."""
    torch.manual_seed(0)
    model = stkd_student(refiner_channels=8)
    frames = torch.full((4, 1, 3, 64, 64), 0.2)
    masks = torch.zeros(4, 1, 1, 64, 64)
    for row, x in enumerate((13, 22, 37, 50)):  # a thin bright line, somewhere else in each sample
        frames[row, 0, :, :, x] = 0.9
        masks[row, 0, 0, :, x] = 1.0
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith("refiner."))
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    valid = torch.ones(4, 1, dtype=torch.bool)
    losses = []
    for _ in range(60):
        loss, terms = saliency_loss(model.forward_clip(frames), masks, valid)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(terms["final"])  # the only term the refiner can change
    assert losses[-1] < 0.5 * losses[0]
    with torch.no_grad():
        model.eval()
        probability = torch.sigmoid(model.forward_clip(frames).logits)[:, 0]
    on_line = probability[masks[:, 0, 0] > 0.5].mean()
    beside = probability[:, :, (torch.tensor([13, 22, 37, 50]) + 5) % 64].mean()
    assert on_line > beside + 0.1


def test_supervision_names_and_weighs_the_stride_4_map_as_a_side_output() -> None:
    model = refining_student()
    clip, masks = torch.rand(1, 2, 3, 64, 64), (torch.rand(1, 2, 1, 64, 64) > 0.5).float()
    _, terms = saliency_loss(model.forward_clip(clip), masks, torch.ones(1, 2, dtype=torch.bool))
    assert {"final", "side16", "side8", "side4", "coarse"} <= set(terms)
    _, plain_terms = saliency_loss(stkd_student().forward_clip(clip), masks, torch.ones(1, 2, dtype=torch.bool))
    assert "side4" not in plain_terms  # without a refiner the stride-4 map is the final one, supervised once


def test_the_exported_step_and_the_store_carry_the_refiner(tmp_path: Path) -> None:
    model = refining_student()
    record = export_step(model, (160, 160), tmp_path / "step.onnx")
    assert record["max_probability_error"] <= TOLERANCE
    rows = {"frames": (3, 160, 160), "previous": model.state_shape((160, 160)), "fresh": ()}
    graph = OnnxStep(tmp_path / "step.onnx", torch.device("cpu"), rows, threads=1)
    assert step_disagreement(graph, StreamStep(model), model, (160, 160), stream_frames=3) <= TOLERANCE
    store = ModelStore(tmp_path / "store")
    store.save(model, Manifest("refined", "", {}, (160, 160), "1", ""), step_graph=False)
    loaded, manifest = store.load("refined")
    assert manifest.config["refiner_channels"] == 8
    frames = torch.rand(1, 3, 160, 160)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(frames).logits, model(frames).logits, atol=1e-6, rtol=0)
    assert "refiner_channels" not in stkd_student(motion_channels=8).config.to_dict()  # earlier manifests unchanged
