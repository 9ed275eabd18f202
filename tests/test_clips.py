"""ClipDataset: shapes, valid flags for sparse ground truth, determinism, aligned augmentation."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from distill.data import VideoSequence, read_rgb
from distill.data.clips import ClipDataset
from distill.data.degrade import Degradation, degrade, sample_degradation
from distill.data.loaders import load_davis
from distill.data.synthetic import generate_synthetic
from service.model.processing import resize_image

SIZE = (32, 48)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> list[VideoSequence]:
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic(root, 2, 5, seed=11, size=(48, 64), split="train")
    return load_davis(root, "train")


def square_sequence(root: Path, count: int, annotated: set[int], name: str = "sq") -> VideoSequence:
    """A bright square moving on a dark, slightly textured background; masks only where asked."""
    frames, masks = [], {}
    for t in range(count):
        image = np.random.default_rng(t).integers(0, 40, (40, 60, 3), dtype=np.uint8)
        mask = np.zeros((40, 60), np.uint8)
        mask[10:26, 8 + 2 * t : 28 + 2 * t] = 255
        image[mask > 0] = (230, 210, 60)
        frames.append(root / f"{name}/{t:03d}.png")
        frames[-1].parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(frames[-1]), image[..., ::-1])
        if t in annotated:
            masks[t] = root / f"{name}/{t:03d}_gt.png"
            cv2.imwrite(str(masks[t]), mask)
    return VideoSequence(name, frames, masks)


def test_shapes_ranges_and_batching(synthetic: list[VideoSequence]) -> None:
    dataset = ClipDataset(synthetic, clip_len=3, input_size=SIZE, augment=True, seed=0, samples_per_epoch=6)
    assert len(dataset) == 6
    item = dataset[0]
    assert item["frames"].shape == (3, 3, *SIZE) and item["frames"].dtype == torch.float32
    assert item["masks"].shape == (3, 1, *SIZE) and item["masks"].dtype == torch.float32
    assert item["valid"].dtype == torch.bool and item["valid"].all()
    assert float(item["frames"].min()) >= 0.0 and float(item["frames"].max()) <= 1.0
    assert set(torch.unique(item["masks"]).tolist()) <= {0.0, 1.0}
    batch = next(iter(DataLoader(dataset, batch_size=4)))
    assert batch["frames"].shape == (4, 3, 3, *SIZE) and batch["valid"].shape == (4, 3)
    with pytest.raises(IndexError):
        dataset[6]


def test_without_augment_clips_are_consecutive_frames_resized_like_inference(synthetic: list[VideoSequence]) -> None:
    a = ClipDataset(synthetic, clip_len=2, input_size=SIZE, augment=False, seed=1)
    b = ClipDataset(synthetic, clip_len=2, input_size=SIZE, augment=False, seed=2)
    assert len(a) == 2 * 4  # every window of every sequence
    for index in (0, 5):
        assert all(torch.equal(a[index][k], b[index][k]) for k in ("frames", "masks", "valid"))
    a.set_epoch(3)
    assert torch.equal(a[5]["frames"], b[5]["frames"])
    sequence = synthetic[1]
    expected = np.stack([resize_image(read_rgb(sequence.frames[i]), SIZE) for i in (1, 2)])
    got = (a[5]["frames"].permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    assert a[5]["name"] == sequence.name and np.array_equal(got, expected)


def test_augmentation_is_seeded_per_epoch(synthetic: list[VideoSequence]) -> None:
    dataset = ClipDataset(synthetic, clip_len=3, input_size=SIZE, augment=True, seed=4, samples_per_epoch=4)
    first = [dataset[i]["frames"] for i in range(4)]
    assert all(torch.equal(x, dataset[i]["frames"]) for i, x in enumerate(first))
    dataset.set_epoch(1)
    assert any(not torch.equal(x, dataset[i]["frames"]) for i, x in enumerate(first))


def test_augmented_masks_stay_on_the_object(tmp_path: Path) -> None:
    sequence = square_sequence(tmp_path, 6, set(range(6)))
    dataset = ClipDataset([sequence], clip_len=3, input_size=(40, 40), augment=True, samples_per_epoch=12)
    for index in range(12):
        item = dataset[index]
        brightness = item["frames"].mean(dim=1)  # T,H,W
        inside = item["masks"][:, 0] > 0.5
        assert inside.any(dim=(1, 2)).all()
        # The crop may cut the square, but where the mask says "object", the bright square is.
        assert float(brightness[inside].mean()) > float(brightness[~inside].mean()) + 0.25


def test_sparse_ground_truth_valid_flags(tmp_path: Path) -> None:
    sequence = square_sequence(tmp_path, 10, {0, 9})
    dataset = ClipDataset([sequence], clip_len=3, input_size=(20, 30), augment=False)
    assert len(dataset) == 2  # only the windows that hold an annotated frame: starts 0 and 7
    first, last = dataset[0], dataset[1]
    assert first["valid"].tolist() == [True, False, False]
    assert last["valid"].tolist() == [False, False, True]
    assert float(first["masks"][1:].sum()) == 0.0 and float(first["masks"][0].sum()) > 0
    augmented = ClipDataset([sequence], clip_len=3, input_size=(20, 30), augment=True, samples_per_epoch=20)
    assert all(augmented[i]["valid"].any() for i in range(20))


def test_one_frame_sequences_become_jittered_pairs(tmp_path: Path) -> None:
    still = square_sequence(tmp_path, 1, {0}, name="duts")
    dataset = ClipDataset([still], clip_len=2, input_size=(40, 60), augment=False, samples_per_epoch=3)
    item = dataset[0]
    assert item["valid"].tolist() == [True, True]
    assert not torch.equal(item["frames"][0], item["frames"][1])  # the temporal path sees motion
    assert not torch.equal(item["masks"][0], item["masks"][1])
    overlap = (item["masks"][0] * item["masks"][1]).sum() / item["masks"][0].sum()
    assert overlap > 0.6  # a small jitter, not another picture
    assert torch.equal(item["frames"], dataset[0]["frames"])


def test_short_sequences_and_bad_input(tmp_path: Path) -> None:
    short = square_sequence(tmp_path, 2, {0, 1}, name="short")
    item = ClipDataset([short], clip_len=4, input_size=(20, 20), augment=False)[0]
    assert item["frames"].shape == (4, 3, 20, 20) and item["valid"].all()
    unannotated = square_sequence(tmp_path, 3, set(), name="bare")
    with pytest.raises(ValueError, match="ground-truth"):
        ClipDataset([unannotated])
    with pytest.raises(ValueError, match="clip_len"):
        ClipDataset([short], clip_len=0)


def test_degrade_films_a_share_of_clips_with_one_camera_and_keeps_the_rest_exact(tmp_path: Path) -> None:
    sequence = square_sequence(tmp_path, 6, set(range(6)))
    kwargs = {"clip_len": 3, "input_size": (40, 40), "augment": True, "seed": 5, "samples_per_epoch": 40}
    plain = ClipDataset([sequence], **kwargs)
    filmed = ClipDataset([sequence], degrade=0.5, **kwargs)
    changed = 0
    for index in range(40):
        before, after = plain[index], filmed[index]
        # The same crop, flip and frames: only how they look may differ, never the masks.
        assert torch.equal(before["masks"], after["masks"]) and before["valid"].tolist() == after["valid"].tolist()
        if not torch.equal(before["frames"], after["frames"]):
            changed += 1
            inside = after["masks"][:, 0] > 0.5
            brightness = after["frames"].mean(dim=1)
            assert float(brightness[inside].mean()) > float(brightness[~inside].mean()) + 0.2  # still the square
        assert torch.equal(after["frames"], filmed[index]["frames"])  # seeded like the rest of augmentation
    assert 8 <= changed <= 32  # about half, of 40 draws
    never = ClipDataset([sequence], degrade=1.0, **{**kwargs, "augment": False})
    assert torch.equal(never[0]["frames"], ClipDataset([sequence], **{**kwargs, "augment": False})[0]["frames"])
    with pytest.raises(ValueError, match="degrade"):
        ClipDataset([sequence], degrade=1.5)


def test_each_degradation_changes_the_frame_the_way_its_name_says() -> None:
    rng = np.random.default_rng(0)
    frame = np.zeros((64, 64, 3), np.uint8)
    frame[:, 32:] = 200  # one sharp vertical edge
    frame[20:40, 8:20] = (40, 160, 90)

    def edge_step(image: np.ndarray) -> float:
        return float(np.abs(np.diff(image[:, 28:36].astype(np.float32).mean(axis=(0, 2)))).max())

    assert np.array_equal(degrade(frame, Degradation(), rng), frame)  # the neutral camera changes nothing
    sharp = edge_step(frame)
    assert edge_step(degrade(frame, Degradation(blur=1.2), rng)) < 0.6 * sharp
    assert edge_step(degrade(frame, Degradation(resolution=0.4), rng)) < 0.8 * sharp
    noisy = degrade(frame, Degradation(noise=6.0), rng).astype(np.float32) - frame
    assert 5.0 < float(noisy[:, 40:].std()) < 7.0  # measured at 200, where no value clips
    warm = degrade(frame, Degradation(white_balance=(1.1, 1.0, 0.9)), rng)
    assert warm[0, 40, 0] == 220 and warm[0, 40, 2] == 180
    compressed = degrade(frame, Degradation(jpeg_quality=20), rng)
    assert compressed.shape == frame.shape and not np.array_equal(compressed, frame)
    assert float(np.abs(compressed.astype(np.float32) - frame).mean()) < 12  # the same picture, with artefacts
    # Green stays green after the round trip: the channels are not swapped.
    assert compressed[30, 14, 1] > compressed[30, 14, 0] + 60
    assert sample_degradation(rng, 0.0) is None
    drawn = [sample_degradation(np.random.default_rng(i), 1.0) for i in range(50)]
    assert all(d is not None for d in drawn)
    kinds = [sum((d.blur > 0, d.resolution < 1, d.jpeg_quality < 100, d.noise > 0, d.white_balance != (1.0, 1.0, 1.0)))
             for d in drawn if d is not None]
    assert set(kinds) == {2}
