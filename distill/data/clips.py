"""Clips of consecutive frames for training: the student learns its temporal path from frame pairs.

Every clip shares one augmentation (flip, scale/crop, colour jitter), so motion between its frames
stays real motion. Images are resized with `service.model.processing.resize_image`, exactly as at
inference. Randomness comes from (seed, epoch, index), so results do not depend on DataLoader workers,
and without `augment` an index always gives the same clip.

Masks are exact (bool, thresholded after every resample) or, for sequences marked `soft` (a teacher's
maps), float32 in [0, 1] that every warp and resize keeps soft: the loss then learns the teacher's
confidence, not a binarised copy of it.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from service.model.processing import resize_image

from .degrade import degrade, sample_degradation
from .sequences import VideoSequence, read_mask, read_rgb, read_soft_mask

Rng = np.random.Generator


class ClipDataset(Dataset):
    """`clip_len` consecutive frames of one sequence, with masks and a per-frame "has GT" flag.

    With `samples_per_epoch`, item i takes sequence i mod N (every sequence equally often, whatever
    its length) at a random start; without it, one item per window holding at least one annotated
    frame. One-frame sequences (DUTS) repeat the image under small independent affine jitter.
    """

    def __init__(
        self,
        sequences: Sequence[VideoSequence],
        clip_len: int = 3,
        input_size: tuple[int, int] = (256, 256),
        augment: bool = True,
        seed: int = 0,
        samples_per_epoch: int | None = None,
        degrade: float = 0.0,
    ) -> None:
        if clip_len < 1:
            raise ValueError("clip_len must be at least 1")
        if not 0.0 <= degrade <= 1.0:
            raise ValueError("degrade must be a probability in [0, 1]")
        self.sequences = [s for s in sequences if s.frames and s.masks]
        if not self.sequences:
            raise ValueError("no sequence has both frames and ground-truth masks")
        self.clip_len = clip_len
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.augment = augment
        self.degrade = degrade
        self.seed = seed
        self.epoch = 0
        self.samples_per_epoch = samples_per_epoch
        # Starts (stride 1) whose window holds at least one annotated frame: sparse GT (FBMS, every
        # 20th frame) must not yield clips with nothing to learn from.
        self.starts = [self._starts(s, 1) for s in self.sequences]
        self.windows = [(k, start) for k, starts in enumerate(self.starts) for start in starts]

    def set_epoch(self, epoch: int) -> None:
        """New random augmentations each epoch, still reproducible."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.samples_per_epoch if self.samples_per_epoch is not None else len(self.windows)

    def _starts(self, sequence: VideoSequence, stride: int) -> list[int]:
        span = (self.clip_len - 1) * stride
        last = max(len(sequence.frames) - 1 - span, 0)
        annotated = np.array(sequence.annotated)
        return [s for s in range(last + 1) if ((annotated >= s) & (annotated <= s + span)).any()] or [0]

    def _pick(self, index: int, rng: Rng) -> tuple[VideoSequence, list[int]]:
        if self.samples_per_epoch is None:
            k, start = self.windows[index % len(self.windows)]
        else:
            k = index % len(self.sequences)
            starts = self.starts[k]
            turn = int(rng.integers(len(starts))) if self.augment else index // len(self.sequences)
            start = starts[turn % len(starts)]
        sequence = self.sequences[k]
        stride = 1
        if self.augment and self.clip_len > 1 and rng.random() < 0.5:
            wider = self._starts(sequence, 2)
            if len(sequence.frames) > (self.clip_len - 1) * 2 and wider:
                stride, start = 2, min(wider, key=lambda s: abs(s - start))
        last = len(sequence.frames) - 1
        return sequence, [min(start + i * stride, last) for i in range(self.clip_len)]

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, self.epoch if self.augment else 0, index])
        sequence, indices = self._pick(index, rng)
        frames, masks, valid = [], [], []
        for i in indices:
            frame = read_rgb(sequence.frames[i])
            if i in sequence.masks and sequence.soft:
                mask = read_soft_mask(sequence.masks[i])
                if mask.shape != frame.shape[:2]:
                    mask = cv2.resize(mask, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_LINEAR)
            elif i in sequence.masks:
                mask = read_mask(sequence.masks[i])
                if mask.shape != frame.shape[:2]:
                    size = (frame.shape[1], frame.shape[0])
                    mask = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
            else:
                mask = np.zeros(frame.shape[:2], np.float32 if sequence.soft else bool)
            frames.append(frame)
            masks.append(mask)
            valid.append(i in sequence.masks)
        if len(sequence.frames) == 1 and self.clip_len > 1:
            frames, masks = _jitter_copies(frames[0], masks[0], self.clip_len, rng)
            valid = [True] * self.clip_len
        if self.augment:
            frames, masks = _augment(frames, masks, rng)
        frames = [resize_image(f, self.input_size) for f in frames]
        # Drawn last, so runs without it keep every earlier draw (their exact samples).
        camera = sample_degradation(rng, self.degrade) if self.augment else None
        if camera is not None:
            frames = [degrade(f, camera, rng) for f in frames]
        frame_tensor = np.stack(frames)
        mask_tensor = np.stack([_resize_mask(m, self.input_size) for m in masks])
        return {
            "frames": torch.from_numpy(frame_tensor).permute(0, 3, 1, 2).float().div_(255.0),
            "masks": torch.from_numpy(mask_tensor[:, None].astype(np.float32)),
            "valid": torch.tensor(valid, dtype=torch.bool),
            "soft": torch.tensor(sequence.soft),  # a teacher's maps (soft targets), not exact masks
            "name": sequence.name,
        }


def _resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A mask at the input size: exact masks area-averaged then thresholded (thin parts survive better
    than with nearest), soft maps area-averaged and kept soft."""
    if mask.dtype == bool:
        return resize_image(mask.astype(np.uint8) * 255, size) > 127
    return np.clip(resize_image(mask, size), 0.0, 1.0)


def _jitter_copies(frame: np.ndarray, mask: np.ndarray, count: int, rng: Rng) -> tuple[list, list]:
    """The first copy as is, each later one under a small random affine (as if filmed a moment later)."""
    height, width = mask.shape
    frames, masks = [frame], [mask]
    for _ in range(count - 1):
        angle, scale = rng.uniform(-3, 3), rng.uniform(0.96, 1.04)
        matrix: np.ndarray = cv2.getRotationMatrix2D((width / 2.0, height / 2.0), angle, scale)
        matrix[:, 2] += rng.uniform(-0.04, 0.04, 2) * (width, height)
        frames.append(cv2.warpAffine(frame, matrix, (width, height), borderMode=cv2.BORDER_REFLECT_101))
        if mask.dtype == bool:
            warped = cv2.warpAffine(mask.astype(np.uint8) * 255, matrix, (width, height), borderValue=0)
            masks.append(warped > 127)
        else:
            masks.append(cv2.warpAffine(mask, matrix, (width, height), flags=cv2.INTER_LINEAR, borderValue=0))
    return frames, masks


def _augment(frames: list[np.ndarray], masks: list[np.ndarray], rng: Rng) -> tuple[list, list]:
    """One flip, crop and colour jitter for the whole clip."""
    flip = rng.random() < 0.5
    area, aspect = rng.uniform(0.55, 1.0), np.exp(rng.uniform(-0.15, 0.15))
    u, v = rng.random(), rng.random()
    brightness, contrast, saturation = rng.uniform(0.8, 1.2, 3)
    out_frames, out_masks = [], []
    for frame, mask in zip(frames, masks, strict=True):
        height, width = mask.shape
        ch = min(height, int(round(height * np.sqrt(area / aspect))))
        cw = min(width, int(round(width * np.sqrt(area * aspect))))
        y, x = int(u * (height - ch)), int(v * (width - cw))
        frame, mask = frame[y : y + ch, x : x + cw], mask[y : y + ch, x : x + cw]
        if flip:
            frame, mask = frame[:, ::-1], mask[:, ::-1]
        image = frame.astype(np.float32)
        grey = image @ np.array([0.299, 0.587, 0.114], np.float32)
        image = grey[..., None] + (image - grey[..., None]) * saturation
        image = (image - grey.mean()) * contrast + grey.mean() * brightness
        out_frames.append(np.ascontiguousarray(np.clip(image, 0, 255).astype(np.uint8)))
        out_masks.append(np.ascontiguousarray(mask))
    return out_frames, out_masks
