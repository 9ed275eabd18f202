"""One in-memory description of a video with (possibly sparse) ground truth, and its readers.

Every loader, real or synthetic, ends in a list of `VideoSequence`, so training and evaluation never
care which benchmark's folder layout the frames came from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from service.formats import IMAGE_SUFFIXES


@dataclass
class VideoSequence:
    """A clip: sorted frame paths and ground-truth masks keyed by frame index (sparse GT allowed)."""

    name: str
    frames: list[Path]
    masks: dict[int, Path] = field(default_factory=dict)
    # Soft targets (a teacher's maps, 8-bit): read with `read_soft_mask`, never binarised for training.
    soft: bool = False

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def annotated(self) -> list[int]:
        """Frame indices that carry ground truth, ascending."""
        return sorted(self.masks)


def natural_key(value: Path | str) -> tuple:
    """Sort `f2` before `f10` (FBMS and SegTrack frames are not always zero-padded): a Path by its
    file name, a string (a sequence name) as a whole."""
    text = value.name if isinstance(value, Path) else value
    return tuple(int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text))


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside `folder`, in natural order."""
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=natural_key)


def read_rgb(path: Path | str) -> np.ndarray:
    """uint8 HxWx3 RGB; grayscale images are expanded, alpha dropped."""
    path = Path(path)
    # np.fromfile + imdecode instead of imread: imread cannot open non-ASCII paths on some platforms.
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise ValueError(f"cannot read image {path}: {error}") from error
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ValueError(f"cannot read image {path}: not a decodable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _mask_pixels(path: Path) -> np.ndarray:
    """A mask file's pixels: bool for palette (label indices) and 1-bit files, else grey HxW (colour
    files: the channel maximum)."""
    # Pillow, not OpenCV: OpenCV expands a palette to colours, losing which index is background.
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode == "P":
                return np.asarray(image) != 0
            if image.mode == "1":
                return np.asarray(image).astype(bool)
            if image.mode in ("LA", "RGBA", "PA"):
                array = np.asarray(image.convert("RGB" if image.mode == "RGBA" else "L"))
            else:
                array = np.asarray(image)
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise ValueError(f"cannot read mask {path}: {error}") from error
    if array.ndim == 3:
        array = array.max(axis=2)
    if array.size == 0:
        raise ValueError(f"cannot read mask {path}: empty image")
    return array


def read_mask(path: Path | str) -> np.ndarray:
    """bool HxW foreground.

    Palette PNGs (DAVIS-2017 object ids) are read as indices, not colours, and any non-zero label is
    foreground. Grayscale or RGB masks: > half range, or > 0 when the file is strictly 0/1.
    """
    array = _mask_pixels(Path(path))
    if array.dtype == bool:
        return array
    peak = int(array.max())
    if peak <= 1:
        return array > 0
    threshold = 32767 if array.dtype != np.uint8 and peak > 255 else 127
    return array > threshold


def read_soft_mask(path: Path | str) -> np.ndarray:
    """float32 HxW in [0, 1]: a soft map (a teacher's saliency as 8- or 16-bit grey) kept soft.

    Colour files take their channel maximum, as `read_mask` does; palette files are label indices,
    so they are read as exact masks (0 or 1).
    """
    array = _mask_pixels(Path(path))
    if array.dtype == bool:
        return array.astype(np.float32)
    full_scale = 255.0 if array.dtype == np.uint8 else 65535.0 if array.dtype == np.uint16 else None
    if full_scale is None:  # 32-bit grey ("I"): 16-bit content as Pillow reads it
        full_scale = 65535.0 if int(array.max()) > 255 else 255.0
    return np.clip(array.astype(np.float32) / np.float32(full_scale), 0.0, 1.0)
