"""Real-object composites: what `vsod-train synth --cutouts ROOT --backgrounds DIR...` pastes.

Objects are cut out of real photos by a teacher's soft maps (a root that `vsod-train label` wrote);
backgrounds are raster wallpapers (Debian's desktop-base and gnome-backgrounds). The generator
(`distill.data.synthetic.sample_scene`) moves, lights and occludes them exactly as it does its
procedural objects, and the paste gives the exact mask (alpha >= 0.5), so composites are exact-mask
data whose objects look like the real world.

Fairness: the clips issue "Real-world accuracy" reserves for evaluation (box.mp4, cup.mp4) and the
opencv-doc pictures of the same box (box.png, box_in_scene.png) are refused as cut-outs and as
backgrounds, whatever folder they sit in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from service.formats import IMAGE_SUFFIXES

from .loaders import load_labelled
from .sequences import read_rgb, read_soft_mask

Rng = np.random.Generator

# File stems never used for training (issue "Real-world accuracy": evaluation only).
RESERVED_STEMS = frozenset({"box", "box_in_scene", "cup"})
MIN_COVER, MAX_COVER = 0.02, 0.70  # a map covering less is noise, more is a background, not an object
MIN_BACKGROUND_SIDE = 480  # smaller files in those packages are icons, dots and password fields
# Logos and login-screen previews (avatars, text) would be unlabelled salient objects in the background.
UNSUITABLE_BACKGROUNDS = ("logo", "preview")
MAX_SIDE = 1024  # decoded backgrounds are kept at most this large: canvases are ~730 px wide
FAINT = 0.1  # teacher confidence below this is dropped: pasted, it would carry the photo's own background


@dataclass
class Cutout:
    """An object cut out of a photo: its pixels and the teacher's soft map, cropped to the object."""

    name: str
    rgb: np.ndarray  # float32 h,w,3 in [0, 1]
    alpha: np.ndarray  # float32 h,w in [0, 1]


def reserved(path: Path | str) -> bool:
    return Path(path).stem.lower() in RESERVED_STEMS


def cutout_from(name: str, frame: np.ndarray, soft: np.ndarray) -> Cutout | None:
    """The object of one labelled frame, or None when the map covers < 2% or > 70% of it."""
    if soft.shape != frame.shape[:2]:
        soft = cv2.resize(soft, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_LINEAR)
    inside = soft >= 0.5
    if not MIN_COVER <= float(inside.mean()) <= MAX_COVER:
        return None
    ys, xs = np.nonzero(inside)
    height, width = inside.shape
    margin = int(0.06 * max(np.ptp(ys) + 1, np.ptp(xs) + 1)) + 2  # keeps the soft rim
    y0, y1 = max(int(ys.min()) - margin, 0), min(int(ys.max()) + margin + 1, height)
    x0, x1 = max(int(xs.min()) - margin, 0), min(int(xs.max()) + margin + 1, width)
    alpha = soft[y0:y1, x0:x1].astype(np.float32)
    alpha[alpha < FAINT] = 0.0
    rgb = frame[y0:y1, x0:x1].astype(np.float32) / 255.0
    return Cutout(name, np.ascontiguousarray(rgb), np.ascontiguousarray(alpha))


def load_cutouts(root: Path | str, split: str | None = "train") -> list[Cutout]:
    """Every usable object of a teacher-labelled root (each annotated frame of each sequence)."""
    cutouts = []
    for sequence in load_labelled(root, split):
        if sequence.name.lower() in RESERVED_STEMS:
            continue
        for index in sequence.annotated:
            if reserved(sequence.frames[index]):
                continue
            cutout = cutout_from(f"{sequence.name}/{sequence.frames[index].stem}", read_rgb(sequence.frames[index]),
                                 read_soft_mask(sequence.masks[index]))
            if cutout is not None:
                cutouts.append(cutout)
    if not cutouts:
        raise ValueError(f"no labelled frame under {root} has an object covering 2-70% of it: nothing to cut out")
    return cutouts


def _fit(image: np.ndarray, limit: int) -> np.ndarray:
    scale = limit / max(image.shape[:2])
    if scale >= 1:
        return image
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def load_backgrounds(folders: list[Path]) -> dict[str, np.ndarray]:
    """Raster images under `folders` (recursively), at most MAX_SIDE, as uint8 RGB keyed by path.

    SVG and anything OpenCV cannot decode are skipped, as are small images (icons), logos and login
    screen previews, which would be unlabelled salient objects in the background.
    """
    images: dict[str, np.ndarray] = {}
    for folder in folders:
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"background folder not found: {folder}")
        for path in sorted(Path(folder).rglob("*")):
            if (not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES or reserved(path)
                    or any(word in path.stem.lower() for word in UNSUITABLE_BACKGROUNDS) or str(path) in images):
                continue
            try:
                image = read_rgb(path)
            except ValueError:
                continue
            if min(image.shape[:2]) >= MIN_BACKGROUND_SIDE:
                images[str(path)] = _fit(image, MAX_SIDE)
    if not images:
        raise ValueError("no raster background (jpg, png, webp, at least 480 px) in the --backgrounds folders")
    return images


@dataclass
class CompositeAssets:
    """Real cut-outs and real backgrounds, in a fixed order so that a seed always gives the same clips."""

    cutouts: list[Cutout]
    backgrounds: dict[str, np.ndarray]
    sources: dict[str, Any]

    @classmethod
    def load(cls, cutout_root: Path | str, background_folders: list[Path], split: str | None = "train") -> CompositeAssets:
        cutouts = load_cutouts(cutout_root, split)
        backgrounds = load_backgrounds(background_folders)
        sources = {"cutouts": str(Path(cutout_root).resolve()), "cutout_split": split,
                   "objects": [c.name for c in cutouts], "backgrounds": sorted(backgrounds)}
        return cls(cutouts, backgrounds, sources)

    def background(self, rng: Rng, height: int, width: int) -> np.ndarray:
        """A float32 canvas in [0, 1]: a random crop of a random background, flipped at random."""
        image = self.backgrounds[sorted(self.backgrounds)[int(rng.integers(len(self.backgrounds)))]]
        full_h, full_w = image.shape[:2]
        aspect = width / height
        crop_h = min(full_h, full_w / aspect) * rng.uniform(0.5, 1.0)
        crop_w = crop_h * aspect
        y, x = rng.uniform(0, full_h - crop_h), rng.uniform(0, full_w - crop_w)
        crop = image[int(y) : int(y + crop_h), int(x) : int(x + crop_w)]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        canvas = cv2.resize(np.ascontiguousarray(crop), (width, height), interpolation=cv2.INTER_AREA)
        return canvas.astype(np.float32) / 255.0

    def cutout(self, rng: Rng, size: int) -> tuple[np.ndarray, np.ndarray]:
        """(rgb, alpha) of a random object, flipped at random, its longer side `size` pixels."""
        cutout = self.cutouts[int(rng.integers(len(self.cutouts)))]
        rgb, alpha = cutout.rgb, cutout.alpha
        if rng.random() < 0.5:
            rgb, alpha = rgb[:, ::-1], alpha[:, ::-1]
        scale = size / max(alpha.shape)
        shape = (max(2, round(alpha.shape[1] * scale)), max(2, round(alpha.shape[0] * scale)))
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        rgb = cv2.resize(np.ascontiguousarray(rgb), shape, interpolation=interpolation)
        alpha = cv2.resize(np.ascontiguousarray(alpha), shape, interpolation=interpolation)
        return rgb, np.clip(alpha, 0.0, 1.0)
