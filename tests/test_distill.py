"""Distillation: KD losses, the distill trainer (frozen teachers, adapters apart, cache, resume), export, flicker."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from distill.data.loaders import load_dataset
from distill.data.synthetic import generate_synthetic
from distill.distillation import DistillConfig, DistillTrainer
from distill.evaluate import evaluate_sequences
from distill.flicker import STILL_GT_CHANGE, FlickerMeter, pooled
from distill.kd import KDWeights, TeacherTargets, distillation_loss, feature_mimic_loss, soft_map_loss
from distill.runs import LAST, LOG, Runtime, TrainConfig, load_checkpoint
from distill.teachers import load_teacher
from distill.teachers.training import TeacherConfig, TeacherTrainer
from distill.train import Trainer
from service.model import ModelStore, StudentOutput, stkd_student

REPO = Path(__file__).resolve().parents[1]
SIZE = 64
TINY = {"width_mult": 0.35, "channels": 16}


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


# -- losses ---------------------------------------------------------------------------------------


def test_kd_losses_vanish_when_the_student_matches_the_teacher() -> None:
    torch.manual_seed(0)
    teacher = torch.randn(4, 16, 8, 8)
    assert float(feature_mimic_loss(teacher.clone(), teacher)) < 1e-8
    # "Teacher-ish": the same features at another scale and offset (what a 1x1 adapter can produce).
    assert float(feature_mimic_loss(3.0 * teacher + 0.5, teacher)) < 1e-8
    # Another grid: the student's features are resized (bilinear) to the teacher's.
    coarse = torch.randn(4, 16, 4, 4)
    smooth = F.interpolate(coarse, size=(8, 8), mode="bilinear", align_corners=False)
    assert float(feature_mimic_loss(coarse, smooth)) < 1e-8
    other = torch.randn(4, 16, 8, 8, requires_grad=True)
    loss = feature_mimic_loss(other, teacher)
    loss.backward()
    assert float(loss.detach()) > 0.5 and float(other.grad.abs().sum()) > 0

    logits = torch.randn(4, 1, 16, 16) * 3
    for temperature in (1.0, 2.0):
        assert float(soft_map_loss(logits.clone(), logits, temperature)) < 1e-6
        assert float(soft_map_loss(-logits, logits, temperature)) > 0.5
    assert float(soft_map_loss(torch.zeros_like(logits), logits)) > 0.01  # unsure against a confident teacher
    assert float(soft_map_loss(F.interpolate(logits, size=(8, 8), mode="area"), logits)) >= 0.0


def fake_student(batch: int = 2) -> StudentOutput:
    """A StudentOutput with the student's shapes at 64x64 (decoder 32 ch at stride 4, temporal 64 ch at 32)."""
    torch.manual_seed(1)
    sides = [torch.randn(batch, 1, SIZE // s, SIZE // s) for s in (16, 8, 4)]
    logits = F.interpolate(sides[-1], size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    return StudentOutput(logits, sides, torch.randn(batch, 1, 2, 2), torch.randn(batch, 32, 16, 16),
                         torch.randn(batch, 64, 2, 2), torch.randn(batch, 64, 2, 2))


def test_distillation_loss_has_the_terms_of_the_teachers_given() -> None:
    output = fake_student()
    same = TeacherTargets(output.spatial_features, output.side_logits[-1], output.coarse_logits)
    adapted = {"spatial": output.spatial_features, "temporal": output.temporal_features}
    weights = KDWeights()
    total, terms = distillation_loss(output, adapted, same, None, weights)
    assert set(terms) == {"skd", "skd_feature", "skd_final", "skd_coarse"} and float(total) < 1e-6

    temporal = TeacherTargets(torch.randn(2, 24, 2, 2), -output.side_logits[-1], torch.randn(2, 1, 2, 2))
    adapted["temporal"] = torch.randn(2, 24, 2, 2)  # the adapter's output has the teacher's channels
    total, terms = distillation_loss(output, adapted, None, temporal, weights)
    assert set(terms) == {"tkd", "tkd_feature", "tkd_final", "tkd_coarse"} and float(total) > 0.5
    off = KDWeights(temporal_feature=0.0, temporal_map=0.0)
    assert float(distillation_loss(output, adapted, None, temporal, off)[0]) == 0.0


# -- the distill trainer ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny synthetic data and two tiny teachers, trained one step each by `TeacherTrainer`."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("synth")
    generate_synthetic(root, num_sequences=2, frames_per_sequence=5, seed=6, size=(64, 96), split="train")
    runs = tmp_path_factory.mktemp("teachers")
    common: dict[str, object] = {"data": [("davis", str(root))], "input_size": (SIZE, SIZE), "batch": 2, "steps": 1,
                                 "warmup": 1, **TINY}
    TeacherTrainer(TeacherConfig(kind="spatial", clip_len=1, **common), Runtime(runs / "s", progress=False)).run()
    TeacherTrainer(TeacherConfig(kind="temporal", clip_len=3, **common), Runtime(runs / "t", progress=False)).run()
    return {"data": root, "spatial": runs / "s" / LAST, "temporal": runs / "t" / LAST}


def distill_config(setup: dict[str, Path], **overrides: object) -> DistillConfig:
    values: dict[str, object] = {"data": [("davis", str(setup["data"]))], "input_size": (SIZE, SIZE), "clip_len": 3,
                                 "batch": 2, "steps": 2, "warmup": 1, "seed": 0, "spatial_teacher": str(setup["spatial"]),
                                 "temporal_teacher": str(setup["temporal"])}
    values.update(overrides)
    return DistillConfig(**values)


def test_distilled_run_keeps_teachers_frozen_and_the_student_apart(setup: dict[str, Path], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    trainer = DistillTrainer(distill_config(setup), Runtime(tmp_path / "a", progress=False, log_every=1), cache_root=cache)
    before = {role: {k: v.clone() for k, v in t.model.state_dict().items()} for role, t in trainer.teachers.items()}
    student_before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.run()
    for role, teacher in trainer.teachers.items():
        assert not teacher.model.training and not any(p.requires_grad for p in teacher.model.parameters())
        assert all(torch.equal(v, before[role][k]) for k, v in teacher.model.state_dict().items()), role
    assert any(not torch.equal(v, student_before[k]) for k, v in trainer.model.state_dict().items())

    checkpoint = load_checkpoint(tmp_path / "a" / LAST)
    assert set(checkpoint["model"]) == set(stkd_student().state_dict())  # exactly the student, adapters apart
    assert set(checkpoint["adapters"]) == {"spatial.weight", "spatial.bias", "temporal.weight", "temporal.bias"}
    assert checkpoint["kind"] == "student" and checkpoint["command"] == "distill"
    teachers = checkpoint["lineage"]["distillation"]["teachers"]
    assert teachers["spatial"]["sha256"] == load_teacher(setup["spatial"]).info["sha256"]
    logged = [line for line in (tmp_path / "a" / LOG).read_text().splitlines() if '"skd"' in line]
    assert logged and '"tkd"' in logged[-1] and '"gt"' in logged[-1]

    # The same run again from the cache: no teacher pass, the very same student.
    again = DistillTrainer(distill_config(setup), Runtime(tmp_path / "b", progress=False), cache_root=cache)
    again.run()
    assert {c.hits for c in again.caches.values()} == {2} and {c.misses for c in again.caches.values()} == {0}
    cached = load_checkpoint(tmp_path / "b" / LAST)["model"]
    assert all(torch.equal(v, cached[k]) for k, v in checkpoint["model"].items())

    # Stopped at step 1 and resumed: adapters and optimiser come back, the result is the same.
    first = DistillTrainer(distill_config(setup), Runtime(tmp_path / "c", progress=False, stop_at=1))
    first.run()
    saved = load_checkpoint(tmp_path / "c" / LAST)
    resumed = DistillTrainer(DistillConfig.from_dict(saved["config"]), Runtime(tmp_path / "c", progress=False), saved)
    resumed.run()
    final = load_checkpoint(tmp_path / "c" / LAST)["model"]
    for key, value in checkpoint["model"].items():
        assert torch.allclose(value.float(), final[key].float(), atol=1e-5), key

    # Export: the store gets the student's weights, exactly its keys, and the teachers in the lineage.
    store = tmp_path / "store"
    done = vsod_train("export", "--checkpoint", str(tmp_path / "a" / LAST), "--name", "kd", "--store", str(store),
                      "--speed-frames", "1", "--no-progress")
    assert done.returncode == 0, done.stderr
    model, manifest = ModelStore(store).load("kd")
    assert set(model.state_dict()) == set(stkd_student().state_dict())
    assert set(manifest.lineage["distillation"]["teachers"]) == {"spatial", "temporal"}


def test_either_teacher_alone_gives_only_its_terms(setup: dict[str, Path], tmp_path: Path) -> None:
    spatial_only = DistillTrainer(distill_config(setup, temporal_teacher=None, steps=1), Runtime(tmp_path, progress=False))
    # The ablation's premise: the same initial student and the same samples as `vsod-train train`.
    alone = Trainer(TrainConfig.from_dict(asdict(spatial_only.config)), Runtime(tmp_path / "alone", progress=False))
    assert all(torch.equal(v, alone.model.state_dict()[k]) for k, v in spatial_only.model.state_dict().items())
    batch = next(spatial_only.batches())
    assert torch.equal(batch["frames"], next(alone.batches())["frames"])
    terms = spatial_only.train_step(batch)
    assert "skd" in terms and "tkd" not in terms and spatial_only.adapters.temporal is None
    assert terms["loss"] == pytest.approx(terms["gt"] + terms["skd"], rel=1e-4)


def test_distill_refuses_bad_setups(setup: dict[str, Path], tmp_path: Path) -> None:
    runtime = Runtime(tmp_path, progress=False)
    with pytest.raises(ValueError, match="--spatial-teacher and/or --temporal-teacher"):
        DistillTrainer(distill_config(setup, spatial_teacher=None, temporal_teacher=None), runtime)
    with pytest.raises(ValueError, match="window"):
        DistillTrainer(distill_config(setup, clip_len=2), runtime)
    with pytest.raises(ValueError, match="expected a spatial-teacher"):
        DistillTrainer(distill_config(setup, spatial_teacher=str(setup["temporal"])), runtime)
    with pytest.raises(ValueError, match=">= 0"):
        DistillTrainer(distill_config(setup, skd_map=-1.0), runtime)
    done = vsod_train("distill", "--data", str(setup["data"]), "--out", str(tmp_path / "x"), "--steps", "1",
                      "--temporal-teacher", str(setup["spatial"]), "--no-progress")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and "expected a temporal-teacher" in lines[0], done.stderr


def vsod_train(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "distill.cli", *args], cwd=REPO, capture_output=True, text=True,
                          check=False, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


# -- flicker ----------------------------------------------------------------------------------------


def square(top: int, left: int, size: tuple[int, int] = (120, 160), side: int = 20) -> np.ndarray:
    mask = np.zeros(size, np.uint8)
    mask[top : top + side, left : left + side] = 255
    return mask


def test_flicker_counts_only_still_pairs_and_measures_the_change() -> None:
    gts = [square(10, 10), square(10, 10), square(10, 40), square(10, 40), square(10, 41)]
    steady = FlickerMeter()
    blinking = FlickerMeter()
    for index, gt in enumerate(gts):
        steady.step(index, gt, gt)
        blinking.step(index, gt if index % 2 else np.zeros_like(gt), gt)  # the object vanishes every other frame
    # Pairs (0,1), (2,3), (3,4) are still (a 1-pixel shift of a 20-pixel square changes 40 of 19200 pixels);
    # (1,2), a 30-pixel jump, is not.
    assert 40 / 19200 <= STILL_GT_CHANGE < 2 * 20 * 20 / 19200
    assert len(steady.changes) == 3 and steady.changes[:2] == [0.0, 0.0]
    assert steady.changes[2] == pytest.approx(40 / 19200)  # a perfect model moves with its object...
    assert pooled([steady])["flicker"] == pytest.approx(pooled([steady])["flicker_gt"])  # ...and sits on the floor
    assert pooled([blinking])["flicker"] == pytest.approx(400 / 19200) and pooled([blinking])["flicker_pairs"] == 3
    assert pooled([FlickerMeter()]) == {"flicker": None, "flicker_gt": None, "flicker_pairs": 0}

    skipping = FlickerMeter()  # frames 0 and 2 are not consecutive: no pair
    skipping.step(0, gts[0], gts[0])
    skipping.step(2, gts[0], gts[0])
    assert skipping.changes == []


def test_evaluation_reports_flicker(tmp_path: Path) -> None:
    """A still object: the oracle does not flicker, a noisy per-frame predictor does."""
    rng = np.random.default_rng(0)
    names = []
    for t in range(6):
        image = rng.integers(0, 60, (120, 160, 3), dtype=np.uint8)
        mask = square(20, 30)
        image[mask > 0] = 220
        for folder, data, suffix in (("JPEGImages", image, "jpg"), ("Annotations", mask, "png")):
            (tmp_path / folder / "480p" / "still").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(tmp_path / folder / "480p" / "still" / f"{t:05d}.{suffix}"), data)
        names.append(f"/JPEGImages/480p/still/{t:05d}.jpg /Annotations/480p/still/{t:05d}.png")
    (tmp_path / "ImageSets" / "480p").mkdir(parents=True)
    (tmp_path / "ImageSets" / "480p" / "val.txt").write_text("\n".join(names) + "\n")
    sequences = load_dataset("davis", tmp_path, split="val")

    def oracle(frames):
        for _ in frames:
            yield square(20, 30)

    def noisy(frames):
        for index, _ in enumerate(frames):
            yield np.clip(square(20, 30).astype(int) + (index % 2) * 90, 0, 255).astype(np.uint8)

    clean = evaluate_sequences(oracle, sequences, progress=False)
    shaky = evaluate_sequences(noisy, sequences, progress=False)
    assert clean["flicker"] == 0.0 and clean["flicker_gt"] == 0.0 and clean["flicker_pairs"] == 3  # frames 1..4
    assert shaky["flicker"] > 0.2 and shaky["per_sequence"]["still"]["flicker_pairs"] == 3


# -- the ablation script ------------------------------------------------------------------------------


@pytest.mark.parametrize("quick", [True, False])
def test_ablation_commands_are_valid_vsod_train_commands(quick: bool, tmp_path: Path) -> None:
    """Every stage of bench/ablation.py parses with the real CLI; the students share one budget."""
    import argparse
    import importlib.util

    from distill.cli import build_parser

    spec = importlib.util.spec_from_file_location("ablation", REPO / "bench" / "ablation.py")
    ablation = importlib.util.module_from_spec(spec)
    sys.modules["ablation"] = ablation  # its dataclasses look their module up while being defined
    spec.loader.exec_module(ablation)
    student_steps = None if quick else 7  # a per-run override, as the reported run used
    args = argparse.Namespace(out=tmp_path, train_data=[], val_root=None, val_split="val", threads=1, seed=0, scale=1.0,
                              quick=quick, no_cache=False, spatial_steps=None, temporal_steps=None,
                              student_steps=student_steps)
    plan = ablation.stages(args)
    parser = build_parser()
    for stage in plan:
        parsed = parser.parse_args(stage.args)
        assert parsed.func is not None, stage.name
    students = [parser.parse_args(s.args) for s in plan if s.name in ("student", "skd", "tkd", "skd-tkd")]
    budget = {(a.steps, a.batch, a.clip_len, a.input_size, a.lr, a.seed, tuple(a.data)) for a in students}
    assert len(students) == 4 and len(budget) == 1
    if student_steps is not None:
        assert students[0].steps == student_steps
    assert [bool(a.spatial_teacher) for a in students[1:]] == [True, False, True]
    assert [bool(a.temporal_teacher) for a in students[1:]] == [False, True, True]
