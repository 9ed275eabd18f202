"""Teacher-labelled data as soft targets: read soft, kept soft through the clip dataset, learnt as soft."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from distill.data import load_dataset
from distill.data.clips import ClipDataset
from distill.data.sequences import read_mask, read_soft_mask
from distill.losses import bce_iou

SIZE = (48, 64)  # frame height, width


def soft_map(t: int) -> np.ndarray:
    """A blurred disc with a soft rim (values across 0..255), moving right with t."""
    height, width = SIZE
    y, x = np.mgrid[:height, :width]
    distance = np.hypot(y - height / 2, x - (20 + 3 * t))
    return np.clip((16 - distance) * 32, 0, 255).astype(np.uint8)


def write_labelled(root: Path, sequences: dict[str, int], split: str = "train") -> Path:
    """The layout `vsod-train label` writes: JPEG frames, 8-bit soft maps, the split's image-set list."""
    lines = []
    rng = np.random.default_rng(0)
    for name, frames in sequences.items():
        (root / "JPEGImages/480p" / name).mkdir(parents=True, exist_ok=True)
        (root / "Annotations/480p" / name).mkdir(parents=True, exist_ok=True)
        for t in range(frames):
            image = rng.integers(0, 255, (*SIZE, 3), dtype=np.uint8)
            cv2.imwrite(str(root / f"JPEGImages/480p/{name}/{t:05d}.jpg"), image)
            cv2.imwrite(str(root / f"Annotations/480p/{name}/{t:05d}.png"), soft_map(t))
            lines.append(f"/JPEGImages/480p/{name}/{t:05d}.jpg /Annotations/480p/{name}/{t:05d}.png")
    (root / "ImageSets/480p").mkdir(parents=True, exist_ok=True)
    (root / f"ImageSets/480p/{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_soft_masks_are_read_soft_and_exact_ones_exact(tmp_path: Path) -> None:
    grey = soft_map(0)
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    soft = read_soft_mask(tmp_path / "grey.png")
    assert soft.dtype == np.float32
    np.testing.assert_array_equal(soft, grey.astype(np.float32) / 255)
    assert ((soft > 0) & (soft < 1)).any()
    np.testing.assert_array_equal(read_mask(tmp_path / "grey.png"), grey > 127)  # exact reading unchanged
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "deep.png")  # 16-bit: same map
    np.testing.assert_allclose(read_soft_mask(tmp_path / "deep.png"), soft, atol=1e-6)
    palette = Image.fromarray((grey > 127).astype(np.uint8) * 3, mode="L").convert("P")  # object ids, not levels
    palette.save(tmp_path / "ids.png")
    np.testing.assert_array_equal(read_soft_mask(tmp_path / "ids.png"), (grey > 127).astype(np.float32))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read mask"):
        read_soft_mask(tmp_path / "broken.png")


def test_the_labelled_kind_marks_sequences_soft(tmp_path: Path) -> None:
    root = write_labelled(tmp_path / "labelled", {"clip": 4, "photo": 1})
    labelled = load_dataset("labelled", root, "train")
    assert [s.name for s in labelled] == ["clip", "photo"] and all(s.soft for s in labelled)
    assert not any(s.soft for s in load_dataset("davis", root, "train"))
    with pytest.raises(ValueError, match="does not exist"):
        load_dataset("labelled", tmp_path / "missing", "train")


def test_clip_dataset_keeps_soft_maps_soft(tmp_path: Path) -> None:
    root = write_labelled(tmp_path / "labelled", {"clip": 5, "photo": 1})
    sequences = load_dataset("labelled", root, "train")
    plain = ClipDataset(sequences[:1], clip_len=3, input_size=SIZE, augment=False)
    item = plain[0]
    expected = np.stack([soft_map(t) for t in range(3)]).astype(np.float32) / 255
    np.testing.assert_array_equal(item["masks"][:, 0].numpy(), expected)  # at the frame's size: untouched

    halved = ClipDataset(sequences[:1], clip_len=3, input_size=(24, 32), augment=False)[0]["masks"]
    reference = cv2.resize(expected[0], (32, 24), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(halved[0, 0].numpy(), reference, atol=1e-6)

    augmented = ClipDataset(sequences, clip_len=3, input_size=(32, 32), augment=True, seed=1, samples_per_epoch=8)
    for index in range(8):  # video clips and the one-frame photo's jittered copies
        masks = augmented[index]["masks"]
        assert masks.dtype == torch.float32 and float(masks.min()) >= 0 and float(masks.max()) <= 1
        inside = ((masks > 0.02) & (masks < 0.98)).float().mean()
        assert inside > 0.005, f"item {index}: the soft rim was binarised"


def test_exact_masks_stay_exact_in_the_same_dataset(tmp_path: Path) -> None:
    root = write_labelled(tmp_path / "labelled", {"clip": 5})
    exact = load_dataset("davis", root, "train")
    masks = ClipDataset(exact, clip_len=3, input_size=(32, 32), augment=True, seed=1, samples_per_epoch=4)[1]["masks"]
    assert set(torch.unique(masks).tolist()) <= {0.0, 1.0}


def test_the_supervised_loss_learns_the_soft_value() -> None:
    """BCE's minimum over a constant prediction lies at the target's level, not at 0 or 1."""
    target = torch.full((1, 1, 8, 8), 0.3)
    levels = torch.linspace(0.05, 0.95, 19)
    losses = [float(bce_iou(torch.logit(torch.full_like(target, float(p))), target)[0]) for p in levels]
    assert abs(float(levels[int(np.argmin(losses))]) - 0.3) < 0.026
    soft, _ = bce_iou(torch.logit(target), target)
    hard, _ = bce_iou(torch.full_like(target, -10.0), target)
    assert soft < hard
