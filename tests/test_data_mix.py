"""A training mix with per-root shares (`--data ROOT@WEIGHT`): parsing, the weighted stream, a real run."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import pytest
import torch

from distill.data.sampling import SampleStream, WeightedSampleStream
from distill.data.synthetic import generate_synthetic
from distill.losses import adjacent_change_loss
from distill.runs import LAST, Runtime, TrainConfig, load_checkpoint, parse_data_weights, split_weight
from distill.train import Trainer
from tests.test_soft_targets import write_labelled
from tests.test_train import INPUT, fake_output, read_log, vsod_train


def test_weights_parse_from_the_data_flag(tmp_path: Path) -> None:
    assert split_weight("data/synth@2") == ("data/synth", 2.0)
    assert split_weight("labelled:/x/real@0.25") == ("labelled:/x/real", 0.25)
    assert split_weight("/mail/a@b/root") == ("/mail/a@b/root", None)  # an '@' in a path is not a weight
    assert split_weight("/plain/root") == ("/plain/root", None)
    for bad in ("root@0", "root@-1", "root@nan", "root@inf"):
        with pytest.raises(ValueError, match="positive number"):
            split_weight(bad)
    data, weights = parse_data_weights([f"{tmp_path}/a@3", f"labelled:{tmp_path}/b@1"])
    assert data == [("davis", str(tmp_path / "a")), ("labelled", str(tmp_path / "b"))] and weights == [3.0, 1.0]
    assert parse_data_weights([str(tmp_path / "a"), str(tmp_path / "b")])[1] is None
    with pytest.raises(ValueError, match="or none"):
        parse_data_weights([f"{tmp_path}/a@3", str(tmp_path / "b")])


def test_the_weighted_stream_gives_each_root_its_share_and_resumes_exactly() -> None:
    sizes, weights = [30, 4, 1], [2.0, 1.0, 1.0]
    stream = WeightedSampleStream(sizes, weights, seed=3)
    indices = list(itertools.islice(stream, 2000))
    assert len(set(indices)) == len(indices)  # every sample its own augmentation
    total = sum(sizes)
    roots = Counter(0 if k < 30 else 1 if k < 34 else 2 for k in (i % total for i in indices))
    assert [roots[j] / 2000 for j in range(3)] == pytest.approx([0.5, 0.25, 0.25], abs=0.01)
    per_sequence = Counter(i % total for i in indices if i % total < 30)
    assert max(per_sequence.values()) - min(per_sequence.values()) <= 1  # within a root: evenly
    for start in (0, 7, 99, 100, 1234):
        resumed = list(itertools.islice(WeightedSampleStream(sizes, weights, seed=3, start=start), 150))
        assert resumed == indices[start : start + 150]
    assert list(itertools.islice(WeightedSampleStream(sizes, weights, seed=4), 50)) != indices[:50]
    with pytest.raises(ValueError, match="positive weight"):
        WeightedSampleStream([3, 2], [1.0, 0.0], seed=0)


@pytest.fixture(scope="module")
def mix_roots(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("mix")
    generate_synthetic(base / "synth", num_sequences=3, frames_per_sequence=6, seed=1, size=(96, 128), split="train")
    return base / "synth", write_labelled(base / "labelled", {"clip": 5, "photo": 1})


def test_a_weighted_mix_trains_on_soft_and_exact_targets(mix_roots: tuple[Path, Path], tmp_path: Path) -> None:
    synth, labelled = mix_roots
    config = TrainConfig(data=[("davis", str(synth)), ("labelled", str(labelled))], data_weights=[1.0, 3.0],
                         input_size=(64, 64), batch=4, steps=3, warmup=1)
    trainer = Trainer(config, Runtime(tmp_path, progress=False))
    assert isinstance(trainer.sampler(), WeightedSampleStream)
    assert [(c["dataset"], c["weight"], c["share"]) for c in trainer.lineage["data"]] == [
        ("davis", 1.0, 0.25), ("labelled", 3.0, 0.75)]
    names = [trainer.dataset[i]["name"] for i in itertools.islice(trainer.sampler(), 200)]
    assert sum(name in ("clip", "photo") for name in names) / 200 == pytest.approx(0.75, abs=0.02)
    batch = next(trainer.batches())
    masks = batch["masks"]
    assert ((masks > 0.05) & (masks < 0.95)).any()  # the labelled clips' soft maps reached the batch
    assert torch.isfinite(torch.tensor(trainer.train_step(batch)["loss"]))

    plain = Trainer(TrainConfig(data=config.data, input_size=(64, 64), batch=4, steps=3), Runtime(tmp_path / "p", progress=False))
    assert isinstance(plain.sampler(), SampleStream) and "weight" not in plain.lineage["data"][0]


def test_a_weighted_run_resumes_exactly_and_keeps_its_weights(mix_roots: tuple[Path, Path], tmp_path: Path) -> None:
    synth, labelled = mix_roots
    data = ["--data", f"{synth}@1", "--data", f"labelled:{labelled}@2"]
    common = ["--input-size", str(INPUT), "--batch", "2", "--warmup", "2", "--threads", "1", "--no-progress",
              "--log-every", "1", "--save-every", "2"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert vsod_train("train", *data, "--out", str(straight), "--steps", "4", *common).returncode == 0
    first = vsod_train("train", *data, "--out", str(split), "--steps", "4", "--stop-at", "2", *common)
    assert first.returncode == 0, first.stderr
    changed = vsod_train("train", "--data", f"{synth}@1", "--data", f"labelled:{labelled}@1", "--out", str(split),
                         "--resume", "--no-progress")
    assert changed.returncode == 1 and "--data differs" in changed.stderr
    resumed = vsod_train("train", "--out", str(split), "--resume", "--threads", "1", "--log-every", "1", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    a, b = load_checkpoint(straight / LAST), load_checkpoint(split / LAST)
    assert a["config"]["data_weights"] == b["config"]["data_weights"] == [1.0, 2.0]
    assert [c["share"] for c in b["lineage"]["data"]] == pytest.approx([1 / 3, 2 / 3], abs=1e-6)
    losses = lambda run: [r["loss"] for r in read_log(run) if "loss" in r and "event" not in r]  # noqa: E731
    assert losses(straight) == pytest.approx(losses(split), rel=1e-4)
    for key, value in a["model"].items():
        assert torch.allclose(value.float(), b["model"][key].float(), atol=1e-5), key


def moving_square(t: int, size: int = 64) -> torch.Tensor:
    mask = torch.zeros(1, size, size)
    mask[:, 16:40, 8 + 6 * t : 32 + 6 * t] = 1.0
    return mask


def test_temporal_kd_scores_the_change_between_frames_not_the_frames() -> None:
    teacher = torch.stack([torch.stack([moving_square(t) for t in range(3)])] * 2)  # B=2, T=3: the square moves
    valid, soft = torch.ones(2, 3, dtype=torch.bool), torch.tensor([True, False])
    logits = lambda masks: (masks.flatten(0, 1) * 20 - 10)  # noqa: E731 - confident maps of `masks`
    same, terms = adjacent_change_loss(fake_output(logits(teacher)), teacher, valid, soft)
    assert float(same) < 1e-3 and terms["adjacent_pairs"] == 2  # only the soft clip's two pairs count
    extra = teacher.clone()
    extra[..., 48:60, 48:60] = 1.0  # a false object on every frame, the same in each: not a temporal error
    moved, _ = adjacent_change_loss(fake_output(logits(extra)), teacher, valid, soft)
    frozen = teacher[:, :1].expand_as(teacher)  # the right first frame, then no motion
    still, _ = adjacent_change_loss(fake_output(logits(frozen)), teacher, valid, soft)
    assert float(moved) < 0.01 < float(still)
    flicker = teacher.clone()
    flicker[:, 1] = 0  # the object vanishes for one frame and comes back
    flickering, _ = adjacent_change_loss(fake_output(logits(flicker)), teacher, valid, soft)
    assert float(flickering) > float(still)
    wrong_clip_only = teacher.clone()
    wrong_clip_only[1] = 0  # the exact-mask clip is not this term's business
    ignored, _ = adjacent_change_loss(fake_output(logits(wrong_clip_only)), teacher, valid, soft)
    assert float(ignored) < 1e-3
    missing = torch.tensor([[True, False, True], [True, True, True]])
    none, terms = adjacent_change_loss(fake_output(logits(frozen)), teacher, missing, soft)
    assert float(none) == 0.0 and terms["adjacent_pairs"] == 0  # no pair of adjacent labelled frames


def test_temporal_kd_alone_trains_and_leaves_the_exact_clips_supervised(mix_roots: tuple[Path, Path], tmp_path: Path) -> None:
    synth, labelled = mix_roots
    data = ["--data", f"{synth}@1", "--data", f"labelled:{labelled}@2"]
    common = ["--input-size", str(INPUT), "--batch", "4", "--warmup", "1", "--threads", "1", "--no-progress",
              "--log-every", "1", "--steps", "3"]
    done = vsod_train("train", *data, "--out", str(tmp_path / "tkd"), "--soft-temporal", "2", "--no-soft-frames", *common)
    assert done.returncode == 0, done.stderr
    records = [r for r in read_log(tmp_path / "tkd") if "loss" in r and "event" not in r]
    assert records and all("adjacent_change" in r for r in records)
    assert sum(r["adjacent_pairs"] for r in records) > 0
    saved = load_checkpoint(tmp_path / "tkd" / LAST)["config"]
    assert saved["soft_frames"] is False and saved["soft_temporal"] == 2.0

    config = TrainConfig(data=[("davis", str(synth)), ("labelled", str(labelled))], data_weights=[1.0, 1.0],
                         input_size=(64, 64), batch=8, steps=1, soft_frames=False, soft_temporal=1.0)
    trainer = Trainer(config, Runtime(tmp_path / "t", progress=False))
    batch = next(trainer.batches())
    terms = trainer.train_step(batch)
    exact_frames = int((batch["valid"] & ~batch["soft"][:, None]).sum())
    assert terms["valid_frames"] == exact_frames < int(batch["valid"].sum())  # soft clips: no per-frame target
