"""Training: losses, a few optimiser steps that learn, checkpoints, --resume, atomic writes, CLI errors."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from distill.data.synthetic import generate_synthetic
from distill.losses import bce_iou, saliency_loss
from distill.runs import LAST, LOG, Runtime, TrainConfig, load_checkpoint, save_checkpoint
from distill.train import Trainer
from service.model import StudentOutput

REPO = Path(__file__).resolve().parents[1]
INPUT = 96


def fake_output(logits: torch.Tensor) -> StudentOutput:
    """A StudentOutput whose every map is `logits` at the student's scales (strides 16, 8, 4, 32)."""
    height, width = logits.shape[-2:]
    sides = [F.interpolate(logits, size=(height // s, width // s), mode="area") for s in (16, 8, 4)]
    coarse = F.interpolate(logits, size=(height // 32, width // 32), mode="area")
    empty = torch.zeros(logits.shape[0], 1, 1, 1)
    return StudentOutput(logits, sides, coarse, empty, empty, empty)


def square_masks(batch: int = 2, time: int = 3, size: int = 64) -> torch.Tensor:
    masks = torch.zeros(batch, time, 1, size, size)
    masks[..., 16:48, 20:52] = 1.0
    return masks


def test_perfect_prediction_beats_a_bad_one() -> None:
    masks = square_masks()
    valid = torch.ones(2, 3, dtype=torch.bool)
    flat = masks.flatten(0, 1)
    perfect, perfect_terms = saliency_loss(fake_output(flat * 20 - 10), masks, valid)
    inverted, _ = saliency_loss(fake_output(10 - flat * 20), masks, valid)
    unsure, _ = saliency_loss(fake_output(torch.zeros_like(flat)), masks, valid)
    assert perfect < unsure < inverted
    assert perfect_terms["iou"] < 0.01 and perfect_terms["bce"] < 0.01
    assert set(perfect_terms) >= {"loss", "bce", "iou", "final", "side16", "side8", "coarse"}
    bce, iou = bce_iou(torch.full((1, 1, 8, 8), -10.0), torch.zeros(1, 1, 8, 8))
    assert float(iou) < 0.01 and float(bce) < 0.01  # empty ground truth, empty prediction: no loss


def test_frames_without_ground_truth_are_ignored() -> None:
    masks = square_masks()
    flat = masks.flatten(0, 1)
    logits = (flat * 20 - 10).clone()
    valid = torch.tensor([[True, False, True], [False, True, True]])
    garbage = (~valid.flatten()).nonzero().flatten()
    logits[garbage] = -logits[garbage]  # wrong exactly where there is no ground truth
    loss, terms = saliency_loss(fake_output(logits), masks, valid)
    clean, _ = saliency_loss(fake_output(flat * 20 - 10), masks, valid)
    assert float(loss) == pytest.approx(float(clean), rel=1e-5)
    assert terms["valid_frames"] == 4

    none = torch.zeros(2, 3, dtype=torch.bool)
    logits.requires_grad_(True)
    zero, terms = saliency_loss(fake_output(logits), masks, none)
    zero.backward()  # a batch without ground truth still back-propagates (zero gradients)
    assert float(zero.detach()) == 0.0 and terms["valid_frames"] == 0 and float(logits.grad.abs().sum()) == 0.0


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate_synthetic(root, num_sequences=3, frames_per_sequence=6, seed=1, size=(96, 128), split="train")
    return root


def tiny_config(root: Path, **overrides: object) -> TrainConfig:
    values: dict[str, object] = {"data": [("davis", str(root))], "split": "train", "input_size": (INPUT, INPUT),
                                 "clip_len": 3, "batch": 2, "steps": 20, "lr": 2e-3, "warmup": 1, "seed": 0}
    values.update(overrides)
    return TrainConfig(**values)


def test_training_steps_reduce_the_loss(synth_root: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    trainer = Trainer(tiny_config(synth_root), Runtime(tmp_path, progress=False))
    batch = next(trainer.batches())
    assert batch["frames"].shape == (2, 3, 3, INPUT, INPUT) and batch["masks"].shape == (2, 3, 1, INPUT, INPUT)
    losses = [trainer.train_step(batch)["loss"] for _ in range(15)]
    assert trainer.step == 15
    assert losses[-1] < 0.7 * losses[0], losses


def vsod_train(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "distill.cli", *args], cwd=REPO, capture_output=True, text=True, check=False,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def train_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", f"davis:{root}", "--out", str(out), "--input-size", str(INPUT), "--clip-len", "3",
            "--batch", "2", "--warmup", "2", "--threads", "1", "--no-progress", *extra]


def read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / LOG).read_text().splitlines()]


def test_resume_continues_where_the_run_stopped(synth_root: Path, tmp_path: Path) -> None:
    straight, split = tmp_path / "straight", tmp_path / "split"
    done = vsod_train(*train_args(synth_root, straight, "--steps", "6", "--save-every", "3", "--log-every", "1"))
    assert done.returncode == 0, done.stderr
    assert "stopped at step 6" in done.stdout

    first = vsod_train(*train_args(synth_root, split, "--steps", "6", "--stop-at", "4", "--save-every", "3",
                                   "--log-every", "1"))
    assert first.returncode == 0, first.stderr
    assert load_checkpoint(split / LAST)["step"] == 4
    # Only the run folder and the budget: the rest of the run's definition comes from the checkpoint.
    resumed = vsod_train("train", "--out", str(split), "--resume", "--steps", "6", "--threads", "1",
                         "--log-every", "1", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr

    log = read_log(split)
    events = [r.get("event") for r in log if "event" in r]
    assert events == ["start", "stop", "resume", "stop"]
    assert [r["step"] for r in log if "loss" in r and "event" not in r] == [1, 2, 3, 4, 5, 6]
    assert next(r for r in log if r.get("event") == "resume")["step"] == 4

    a, b = load_checkpoint(straight / LAST), load_checkpoint(split / LAST)
    assert a["step"] == b["step"] == 6
    assert len(b["lineage"]["commands"]) == 2 and "--resume" in b["lineage"]["commands"][1]
    # Same data order, RNG and schedule: the resumed run ends where the uninterrupted one did.
    for key, value in a["model"].items():
        assert torch.allclose(value.float(), b["model"][key].float(), atol=1e-5), key
    straight_losses = [r["loss"] for r in read_log(straight) if "loss" in r and "event" not in r]
    split_losses = [r["loss"] for r in log if "loss" in r and "event" not in r]
    assert straight_losses == pytest.approx(split_losses, rel=1e-4)


def test_time_budget_stops_cleanly_and_saves(synth_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "timed"
    done = vsod_train(*train_args(synth_root, run, "--max-minutes", "0.03"))
    assert done.returncode == 0, done.stderr
    stop = read_log(run)[-1]
    assert stop["event"] == "stop" and stop["reason"] in ("time budget", "steps")
    assert load_checkpoint(run / LAST)["step"] == stop["step"] >= 1


def test_checkpoint_writes_are_atomic(tmp_path: Path) -> None:
    path = tmp_path / LAST
    save_checkpoint({"format": "vsod-train-checkpoint/1", "step": 1, "weights": torch.ones(3)}, path)
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):  # dies half-way through pickling
        save_checkpoint({"format": "vsod-train-checkpoint/1", "step": 2, "broken": lambda: None}, path)
    survivor = load_checkpoint(path)
    assert survivor["step"] == 1 and torch.equal(survivor["weights"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == [LAST]  # no temporary file left behind

    path.write_bytes(b"torn")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--data", "{missing}", "--steps", "1"], "not found"),
        (["--data", "nosuch:{root}", "--steps", "1"], "unknown dataset"),
        (["--data", "{root}"], "--steps"),
        (["--data", "{root}", "--steps", "1", "--input-size", "100"], "multiples of 32"),
        (["--resume", "--steps", "1"], "checkpoint not found"),
        (["--data", "{root}", "--steps", "1", "--init-from", "{missing}"], "neither a model-store folder"),
        (["--data", "{root}", "--steps", "1", "--soft-temporal", "-1"], "--soft-temporal must be"),
        (["--data", "{root}", "--steps", "1", "--no-soft-frames"], "needs --soft-temporal"),
        (["--data", "{root}", "--steps", "1", "--degrade", "1.5"], "--degrade must be"),
        (["--data", "{root}", "--steps", "1", "--degrade", "nan"], "--degrade must be"),
        (["--data", "{root}", "--steps", "1", "--degrade", "0.5", "--no-augment"], "does nothing with --no-augment"),
    ],
)
def test_cli_train_errors_are_one_line(args: list[str], needle: str, synth_root: Path, tmp_path: Path) -> None:
    args = [a.format(missing=tmp_path / "missing", root=synth_root) for a in args]
    done = vsod_train("train", "--out", str(tmp_path / "run"), "--no-progress", *args)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vsod-train train:") and needle in lines[0], done.stderr


@pytest.mark.parametrize(
    "args",
    [["train", "--out", "run", "--degrade", "abc"], ["synth", "--out", "data", "--object-size", "0.1"], ["nosuch"], []],
)
def test_bad_flags_are_refused_in_one_line_too(args: list[str]) -> None:
    """argparse's own errors (a missing or mistyped value, an unknown command) come in one line like the rest."""
    done = vsod_train(*args)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("vsod-train"), done.stderr
    assert "error:" in lines[0] and "--help" in lines[0]


def test_cli_train_refuses_to_overwrite_a_run_and_to_change_a_resumed_one(synth_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert vsod_train(*train_args(synth_root, run, "--steps", "1")).returncode == 0
    again = vsod_train(*train_args(synth_root, run, "--steps", "1"))
    assert again.returncode == 1 and "--resume" in again.stderr
    changed = vsod_train("train", "--out", str(run), "--resume", "--steps", "2", "--lr", "0.1", "--no-progress")
    assert changed.returncode == 1 and "differs from the checkpoint" in changed.stderr
    degraded = vsod_train("train", "--out", str(run), "--resume", "--steps", "2", "--degrade", "0.5", "--no-progress")
    assert degraded.returncode == 1 and "--degrade 0.5 differs from the checkpoint's 0.0" in degraded.stderr


def test_degrade_is_recorded_in_the_run(synth_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert vsod_train(*train_args(synth_root, run, "--steps", "1", "--degrade", "0.5")).returncode == 0
    assert load_checkpoint(run / LAST)["config"]["degrade"] == 0.5


def test_init_from_fine_tunes_a_stored_model_or_a_checkpoint(synth_root: Path, tmp_path: Path, model_store) -> None:  # type: ignore[no-untyped-def]
    """`--init-from` starts the student from given weights (recorded in the lineage); a student of
    another width is refused in one line."""
    from service.model.store import WEIGHTS, sha256_of

    stored = model_store.root / "test-student"
    width = str(json.loads((stored / "manifest.json").read_text())["config"]["width_mult"])
    run = tmp_path / "tuned"
    done = vsod_train(*train_args(synth_root, run, "--steps", "1", "--lr", "1e-9", "--width-mult", width,
                                  "--init-from", str(stored)))
    assert done.returncode == 0, done.stderr
    tuned = load_checkpoint(run / LAST)
    original, _ = model_store.load("test-student")
    # One step at a negligible learning rate: the weights (not BatchNorm's running statistics, which
    # a training step moves) are still the stored model's.
    parameters = dict(original.named_parameters())
    assert all(torch.allclose(tuned["model"][k], v, atol=1e-6) for k, v in parameters.items())
    assert tuned["lineage"]["init_from"]["sha256"] == sha256_of(stored / WEIGHTS)
    again = vsod_train(*train_args(synth_root, tmp_path / "again", "--steps", "1", "--width-mult", width,
                                   "--init-from", str(run / LAST)))
    assert again.returncode == 0, again.stderr
    other = vsod_train(*train_args(synth_root, tmp_path / "other", "--steps", "1", "--width-mult", "0.75",
                                   "--init-from", str(stored)))
    assert other.returncode == 1 and len(other.stderr.strip().splitlines()) == 1 and "width" in other.stderr


def test_fine_tuning_a_model_with_a_motion_branch_keeps_it(synth_root: Path, tmp_path: Path, motion_model_store) -> None:  # type: ignore[no-untyped-def]
    """The default model has a motion branch: `--init-from` it needs no flag that restates that, and a
    --motion-channels that contradicts its weights is refused in one line."""
    from tests.conftest import TEST_MOTION_MODEL

    stored = motion_model_store.root / TEST_MOTION_MODEL
    config = json.loads((stored / "manifest.json").read_text())["config"]
    width = str(config["width_mult"])
    run = tmp_path / "tuned"
    done = vsod_train(*train_args(synth_root, run, "--steps", "1", "--width-mult", width, "--init-from", str(stored)))
    assert done.returncode == 0, done.stderr
    tuned = load_checkpoint(run / LAST)
    assert tuned["model_config"]["motion_channels"] == config["motion_channels"] == 8
    assert any(key.startswith("motion.") for key in tuned["model"])
    # From that run's checkpoint too: its config is read from the mapped file, its weights once more.
    again = vsod_train(*train_args(synth_root, tmp_path / "again", "--steps", "1", "--width-mult", width,
                                   "--init-from", str(run / LAST)))
    assert again.returncode == 0, again.stderr
    assert load_checkpoint(tmp_path / "again" / LAST)["model_config"]["motion_channels"] == 8
    without = vsod_train(*train_args(synth_root, tmp_path / "without", "--steps", "1", "--width-mult", width,
                                     "--motion-channels", "0", "--init-from", str(stored)))
    assert without.returncode == 1 and len(without.stderr.strip().splitlines()) == 1
    assert "motion." in without.stderr and "--motion-channels" in without.stderr


def test_fine_tuning_narrows_the_motion_radius_and_keeps_it(synth_root: Path, tmp_path: Path, motion_model_store) -> None:  # type: ignore[no-untyped-def]
    """`--motion-radius 1 --init-from` a radius-3 model keeps the comparison of the shifts both have; a
    later run from it keeps radius 1 without the flag; a larger radius than the source's is refused."""
    from tests.conftest import TEST_MOTION_MODEL

    stored = motion_model_store.root / TEST_MOTION_MODEL
    width = str(json.loads((stored / "manifest.json").read_text())["config"]["width_mult"])
    narrow = vsod_train(*train_args(synth_root, tmp_path / "narrow", "--steps", "1", "--width-mult", width,
                                    "--init-from", str(stored), "--motion-radius", "1"))
    assert narrow.returncode == 0, narrow.stderr
    tuned = load_checkpoint(tmp_path / "narrow" / LAST)
    assert tuned["model_config"]["motion_radius"] == 1 and tuned["model"]["motion.compare.0.weight"].shape[1] == 10
    again = vsod_train(*train_args(synth_root, tmp_path / "again", "--steps", "1", "--width-mult", width,
                                   "--init-from", str(tmp_path / "narrow" / LAST)))
    assert again.returncode == 0, again.stderr
    assert load_checkpoint(tmp_path / "again" / LAST)["model_config"]["motion_radius"] == 1
    wider = vsod_train(*train_args(synth_root, tmp_path / "wider", "--steps", "1", "--width-mult", width,
                                   "--init-from", str(tmp_path / "narrow" / LAST), "--motion-radius", "3"))
    assert wider.returncode == 1 and len(wider.stderr.strip().splitlines()) == 1
    assert "radius of 3 cannot be taken from one of 1" in wider.stderr
    zero = vsod_train(*train_args(synth_root, tmp_path / "zero", "--steps", "1", "--motion-radius", "0"))
    assert zero.returncode == 1 and zero.stderr.strip() == "vsod-train train: error: --motion-radius must be at least 1"


def test_fine_tuning_adds_a_refiner_and_keeps_it(synth_root: Path, tmp_path: Path, motion_model_store) -> None:  # type: ignore[no-untyped-def]
    """`--refiner-channels 8 --init-from` a model without one adds it (starting at zero); a later run
    from that one keeps it without the flag; a negative count is refused in one line."""
    from tests.conftest import TEST_MOTION_MODEL

    stored = motion_model_store.root / TEST_MOTION_MODEL
    width = str(json.loads((stored / "manifest.json").read_text())["config"]["width_mult"])
    refined = vsod_train(*train_args(synth_root, tmp_path / "refined", "--steps", "1", "--width-mult", width,
                                     "--init-from", str(stored), "--refiner-channels", "8"))
    assert refined.returncode == 0, refined.stderr
    tuned = load_checkpoint(tmp_path / "refined" / LAST)
    assert tuned["model_config"]["refiner_channels"] == 8 and tuned["model_config"]["motion_channels"] == 8
    assert "refiner.correction.weight" in tuned["model"]
    again = vsod_train(*train_args(synth_root, tmp_path / "again", "--steps", "1", "--width-mult", width,
                                   "--init-from", str(tmp_path / "refined" / LAST)))
    assert again.returncode == 0, again.stderr
    assert load_checkpoint(tmp_path / "again" / LAST)["model_config"]["refiner_channels"] == 8
    negative = vsod_train(*train_args(synth_root, tmp_path / "negative", "--steps", "1", "--refiner-channels", "-1"))
    assert negative.returncode == 1
    assert negative.stderr.strip() == "vsod-train train: error: --refiner-channels must be 0 or more"
