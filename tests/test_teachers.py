"""Teachers: cost against the student, the temporal window at work, streaming, checkpoints and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from distill.data.synthetic import generate_synthetic
from distill.runs import LAST, Runtime, load_checkpoint
from distill.teachers import (
    SpatialTeacher,
    SpatialTeacherConfig,
    TemporalTeacher,
    TemporalTeacherConfig,
    load_teacher,
    model_flops,
    teacher_predict_clip,
)
from distill.teachers.training import TeacherConfig, TeacherTrainer
from service.model import stkd_student

REPO = Path(__file__).resolve().parents[1]
SIZE = 64  # small and a multiple of 32: every stride-32 map has 2x2 cells
TINY = {"width_mult": 0.35, "channels": 16}  # the tests' teachers: the same code, a fraction of the cost


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def test_teachers_cost_at_least_five_students_at_352() -> None:
    # Counted on the meta device: shapes only, nothing computed.
    student = model_flops(stkd_student().to("meta"), (352, 352))
    spatial = model_flops(SpatialTeacher().to("meta"), (352, 352))
    temporal = model_flops(TemporalTeacher().to("meta"), (352, 352))
    assert spatial >= 5 * student, (spatial, student)
    assert temporal > 1.5 * spatial  # the same network plus two stride-8 ConvGRUs over the window, per frame


@torch.no_grad()
def calibrated(model: nn.Module) -> nn.Module:
    """Batch-norm statistics from real passes: with a fresh network's unit running variances the
    activations fade to ~1e-7 by stride 32 in eval mode, and every comparison would be vacuous."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # cumulative average over the calibration passes
    model.train()
    for _ in range(2):
        model.forward_clip(torch.rand(2, 3, 3, SIZE, SIZE))
    return model.eval()


def randomise_temporal_path(teacher: TemporalTeacher) -> TemporalTeacher:
    """A fresh temporal teacher's residual branch is zero (it equals its spatial part); wake it up."""
    torch.manual_seed(1)
    nn.init.normal_(teacher.merge[-1][1].weight, std=1.0)
    return calibrated(teacher)


@torch.no_grad()
def test_temporal_teacher_output_depends_on_the_whole_window() -> None:
    teacher = randomise_temporal_path(TemporalTeacher(TemporalTeacherConfig(**TINY, window=3)))
    clip = torch.rand(1, 3, 3, SIZE, SIZE)
    output = teacher.forward_clip(clip)
    assert output.temporal_features.shape == (3, 16, SIZE // 8, SIZE // 8)  # the recurrence runs at stride 8
    base = output.logits
    earlier = clip.clone()
    earlier[:, 0] = torch.rand(3, SIZE, SIZE)  # only the first frame changes
    changed = teacher.forward_clip(earlier).logits
    assert (changed[2] - base[2]).abs().max() > 1e-3  # the last frame sees the first (forward ConvGRU)
    later = clip.clone()
    later[:, 2] = torch.rand(3, SIZE, SIZE)  # only the last frame changes
    assert (teacher.forward_clip(later).logits[0] - base[0]).abs().max() > 1e-3  # ... and back (bidirectional)

    spatial = calibrated(SpatialTeacher(SpatialTeacherConfig(**TINY)))
    alone = spatial.forward_clip(clip).logits
    assert torch.equal(spatial.forward_clip(earlier).logits[2], alone[2])  # the spatial teacher sees one frame


@torch.no_grad()
def test_fresh_temporal_teacher_starts_as_its_spatial_part() -> None:
    teacher = calibrated(TemporalTeacher(TemporalTeacherConfig(**TINY, window=3)))
    clip = torch.rand(2, 3, 3, SIZE, SIZE)
    assert torch.allclose(teacher.forward_clip(clip).logits, teacher.spatial.forward_clip(clip).logits, atol=1e-6)


@torch.no_grad()
def test_streaming_equals_the_centred_window_of_each_frame() -> None:
    teacher = randomise_temporal_path(TemporalTeacher(TemporalTeacherConfig(**TINY, window=3)))
    clip = torch.rand(1, 6, 3, SIZE, SIZE)
    streamed = list(teacher.stream(clip[:, t] for t in range(6)))
    assert len(streamed) == 6
    for t, start in [(0, 0), (1, 0), (2, 1), (4, 3), (5, 3)]:  # window clamped at both ends
        expected = teacher.forward_clip(clip[:, start : start + 3]).logits[t - start]
        assert torch.allclose(streamed[t][0], expected, atol=1e-3), t  # batched vs single-frame convs
    short = list(teacher.stream(clip[:, t] for t in range(2)))  # fewer frames than the window
    assert torch.allclose(short[1][0], teacher.forward_clip(clip[:, :2]).logits[1], atol=1e-3)


def test_teacher_predict_clip_gives_one_mask_per_frame_at_frame_size() -> None:
    frames = [np.random.default_rng(t).integers(0, 255, (40, 56, 3), dtype=np.uint8) for t in range(5)]
    for model in (SpatialTeacher(SpatialTeacherConfig(**TINY)), TemporalTeacher(TemporalTeacherConfig(**TINY))):
        masks = list(teacher_predict_clip(model, (SIZE, SIZE), chunk=2)(iter(frames)))
        assert len(masks) == 5 and all(m.shape == (40, 56) and m.dtype == np.uint8 for m in masks)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate_synthetic(root, num_sequences=2, frames_per_sequence=5, seed=4, size=(64, 96), split="train")
    return root


def teacher_config(root: Path, kind: str, **overrides: object) -> TeacherConfig:
    values: dict[str, object] = {"data": [("davis", str(root))], "kind": kind, "input_size": (SIZE, SIZE), "clip_len": 3,
                                 "batch": 2, "steps": 2, "warmup": 1, "seed": 0, **TINY}
    values.update(overrides)
    return TeacherConfig(**values)


def test_teacher_training_checkpoints_load_frozen_and_chain(synth_root: Path, tmp_path: Path) -> None:
    TeacherTrainer(teacher_config(synth_root, "spatial", clip_len=1), Runtime(tmp_path / "s", progress=False)).run()
    spatial_path = tmp_path / "s" / LAST
    spatial = load_teacher(spatial_path, "spatial-teacher")
    assert spatial.kind == "spatial-teacher" and not spatial.model.training
    assert not any(p.requires_grad for p in spatial.model.parameters())
    assert spatial.info["step"] == 2 and len(spatial.info["sha256"]) == 64

    # The temporal teacher starts from the trained spatial one and equals it before its first step.
    config = teacher_config(synth_root, "temporal", init_from=str(spatial_path), steps=1)
    trainer = TeacherTrainer(config, Runtime(tmp_path / "t", progress=False))
    for key, value in spatial.model.state_dict().items():
        assert torch.equal(trainer.model.spatial.state_dict()[key], value), key
    trainer.run()
    checkpoint = load_checkpoint(tmp_path / "t" / LAST)
    assert checkpoint["kind"] == "temporal-teacher" and checkpoint["command"] == "teacher"
    assert checkpoint["model_config"]["window"] == 3
    assert checkpoint["lineage"]["teacher"]["init_from"]["sha256"] == spatial.info["sha256"]
    with pytest.raises(ValueError, match="expected a spatial-teacher"):
        load_teacher(tmp_path / "t" / LAST, "spatial-teacher")
    with pytest.raises(ValueError, match="clip-len >= 3"):
        TeacherTrainer(teacher_config(synth_root, "temporal", clip_len=2), Runtime(tmp_path / "x", progress=False))


def vsod_train(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "distill.cli", *args], cwd=REPO, capture_output=True, text=True,
                          check=False, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_cli_teacher_trains_and_refuses_bad_runs(synth_root: Path, tmp_path: Path) -> None:
    common = ["--data", str(synth_root), "--input-size", str(SIZE), "--batch", "2", "--warmup", "1", "--threads", "1",
              "--width-mult", "0.35", "--channels", "16", "--no-progress"]
    done = vsod_train("teacher", "--kind", "spatial", "--out", str(tmp_path / "s"), "--steps", "1", *common)
    assert done.returncode == 0, done.stderr
    assert load_checkpoint(tmp_path / "s" / LAST)["kind"] == "spatial-teacher"

    refusals = [
        (["teacher", "--out", str(tmp_path / "a"), "--steps", "1", *common], "--kind"),
        (["teacher", "--kind", "temporal", "--clip-len", "2", "--out", str(tmp_path / "b"), "--steps", "1", *common],
         "clip-len >= 3"),
        (["train", "--out", str(tmp_path / "s"), "--resume", "--steps", "2"], "vsod-train teacher"),
        (["export", "--checkpoint", str(tmp_path / "s" / LAST), "--name", "x", "--store", str(tmp_path / "store")],
         "only students"),
        # The spatial part's shape is read from the --init-from checkpoint; a flag that contradicts it is refused.
        (["teacher", "--kind", "temporal", "--init-from", str(tmp_path / "s" / LAST), "--out", str(tmp_path / "c"),
          "--steps", "1", *common[:-3], "--channels", "24", "--no-progress"], "--channels 24 differs"),
    ]
    for args, needle in refusals:
        failed = vsod_train(*args)
        lines = failed.stderr.strip().splitlines()
        assert failed.returncode == 1 and len(lines) == 1 and needle in lines[0], failed.stderr
