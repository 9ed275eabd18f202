"""Real-object composites: what `vsod-train synth --cutouts ROOT --backgrounds DIR...` pastes.

Objects are cut out of real photos by a teacher's soft maps (a root that `vsod-train label` wrote);
backgrounds are raster wallpapers (Debian's desktop-base and gnome-backgrounds). The generator
(`distill.data.synthetic.sample_scene`) moves, lights and occludes them exactly as it does its
procedural objects, and the paste gives the exact mask (alpha >= 0.5), so composites are exact-mask
data whose objects look like the real world.

Wallpapers are clean gradients and patterns; real footage is cluttered. With scene photos
(`--scenes ROOT`), a share of the clips is set in a whole labelled photo instead: the camera films
it, the objects move over it, and the photo's own object (the teacher's map, at alpha >= 0.5) is
salient too, fixed in the scenery, so the clutter around it is real and no salient thing goes
unlabelled.

Fairness: the clips issue "Real-world accuracy" reserves for evaluation (box.mp4, cup.mp4) and the
opencv-doc pictures of the same box (box.png, box_in_scene.png) are refused as cut-outs and as
backgrounds, whatever folder they sit in.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
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
    """The object of one labelled frame (`soft` at the frame's size), or None when the map covers < 2%
    or > 70% of it."""
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


def _labelled_frames(root: Path | str, split: str | None) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(name, uint8 RGB, the teacher's soft map at the frame's size) of each annotated frame of a
    teacher-labelled root, the evaluation-only names left out."""
    for sequence in load_labelled(root, split):
        if sequence.name.lower() in RESERVED_STEMS:
            continue
        for index in sequence.annotated:
            if reserved(sequence.frames[index]):
                continue
            rgb, soft = read_rgb(sequence.frames[index]), read_soft_mask(sequence.masks[index])
            if soft.shape != rgb.shape[:2]:
                soft = cv2.resize(soft, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
            yield f"{sequence.name}/{sequence.frames[index].stem}", rgb, soft


def load_cutouts(root: Path | str, split: str | None = "train") -> list[Cutout]:
    """Every usable object of a teacher-labelled root (each annotated frame of each sequence)."""
    cutouts = [cutout for name, rgb, soft in _labelled_frames(root, split)
               if (cutout := cutout_from(name, rgb, soft)) is not None]
    if not cutouts:
        raise ValueError(f"no labelled frame under {root} has an object covering 2-70% of it: nothing to cut out")
    return cutouts


@dataclass
class ScenePhoto:
    """A labelled photo used whole as the scenery: its pixels and the teacher's map of its own object."""

    name: str
    rgb: np.ndarray  # uint8 h,w,3
    soft: np.ndarray  # float32 h,w in [0, 1], FAINT confidence dropped


def load_scene_photos(root: Path | str, split: str | None = "train") -> list[ScenePhoto]:
    """Every annotated frame of a teacher-labelled root whose object leaves scenery around it (its map
    covers at most 70%; an empty map is a photo without an object, fine as scenery)."""
    photos = [ScenePhoto(name, _fit(rgb, MAX_SIDE), _fit(np.where(soft < FAINT, 0.0, soft).astype(np.float32), MAX_SIDE))
              for name, rgb, soft in _labelled_frames(root, split) if float((soft >= 0.5).mean()) <= MAX_COVER]
    if not photos:
        raise ValueError(f"no labelled frame under {root} leaves scenery around its object (map over 70% of it)")
    return photos


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
class Scenery:
    """What a composite clip is filmed over (`CompositeAssets.scenery`)."""

    canvas: np.ndarray  # float32 h,w,3 in [0, 1]
    salient: np.ndarray | None = None  # a scene photo's own object (the teacher's map) on the canvas
    reach: np.ndarray | None = None  # how far (x, y pixels) the camera may pan from the centre and see only the photo


@dataclass
class CompositeAssets:
    """Real cut-outs, real backgrounds and, optionally, scene photos, in a fixed order so that a seed
    always gives the same clips."""

    cutouts: list[Cutout]
    backgrounds: dict[str, np.ndarray]
    sources: dict[str, Any]
    scenes: list[ScenePhoto] = field(default_factory=list)
    scene_share: float = 0.0  # share of clips set in a scene photo rather than a wallpaper

    @classmethod
    def load(cls, cutout_root: Path | str, background_folders: list[Path], split: str | None = "train",
             scene_root: Path | str | None = None, scene_split: str | None = "train",
             scene_share: float = 0.5) -> CompositeAssets:
        if not 0.0 <= scene_share <= 1.0:
            raise ValueError(f"the share of clips set in scene photos must lie in [0, 1], got {scene_share}")
        cutouts = load_cutouts(cutout_root, split)
        backgrounds = load_backgrounds(background_folders)
        sources: dict[str, Any] = {"cutouts": str(Path(cutout_root).resolve()), "cutout_split": split,
                                   "objects": [c.name for c in cutouts], "backgrounds": sorted(backgrounds)}
        if scene_root is None:
            return cls(cutouts, backgrounds, sources)
        scenes = load_scene_photos(scene_root, scene_split)
        sources |= {"scenes": str(Path(scene_root).resolve()), "scene_split": scene_split,
                    "scene_photos": [p.name for p in scenes], "scene_share": scene_share}
        return cls(cutouts, backgrounds, sources, scenes, scene_share)

    def scenery(self, rng: Rng, canvas: tuple[int, int], view: tuple[int, int]) -> Scenery:
        """What a clip is filmed over: a `canvas` (height, width) of float32 in [0, 1] that a camera
        with a `view` (the frame's height, width) pans over. Without scene photos it draws exactly what
        `background` draws."""
        if self.scenes and rng.random() < self.scene_share:
            return self._scene_photo(rng, canvas, view)
        return Scenery(self.background(rng, *canvas))

    def _scene_photo(self, rng: Rng, canvas: tuple[int, int], view: tuple[int, int]) -> Scenery:
        """A photo a little larger than the view (1.1-1.35x), centred on the canvas; a larger canvas is
        filled by mirroring the photo, and `reach` keeps the camera inside the photo itself."""
        photo = self.scenes[int(rng.integers(len(self.scenes)))]
        height, width = photo.soft.shape
        scale = max(view[0] / height, view[1] / width) * rng.uniform(1.1, 1.35)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        layers = [cv2.resize(photo.rgb, size, interpolation=interpolation).astype(np.float32) / 255.0,
                  cv2.resize(photo.soft, size, interpolation=interpolation)]
        flip = rng.random() < 0.5
        # The canvas on the photo: in its middle where the photo is larger, centred where it is smaller.
        top = (size[1] - canvas[0]) * rng.uniform(0.3, 0.7) if size[1] > canvas[0] else (size[1] - canvas[0]) / 2
        left = (size[0] - canvas[1]) * rng.uniform(0.3, 0.7) if size[0] > canvas[1] else (size[0] - canvas[1]) / 2
        placed = []
        for layer in layers:
            if flip:
                layer = np.ascontiguousarray(layer[:, ::-1])
            move = np.array([[1.0, 0.0, -left], [0.0, 1.0, -top]])
            placed.append(cv2.warpAffine(layer, move, (canvas[1], canvas[0]), flags=cv2.INTER_LINEAR,
                                         borderMode=cv2.BORDER_REFLECT_101))
        seen = np.minimum(np.array([size[0], size[1]], float), (canvas[1], canvas[0]))
        reach = np.maximum((seen - (view[1], view[0])) / 2.0, 0.0)
        return Scenery(np.clip(placed[0], 0.0, 1.0), np.clip(placed[1], 0.0, 1.0), reach)

    def background(self, rng: Rng, height: int, width: int) -> np.ndarray:
        """A float32 canvas in [0, 1]: a random crop of a random background, flipped at random."""
        image = self.backgrounds[sorted(self.backgrounds)[int(rng.integers(len(self.backgrounds)))]]
        return _crop(rng, image, height, width).astype(np.float32) / 255.0

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


def _crop(rng: Rng, image: np.ndarray, height: int, width: int) -> np.ndarray:
    """A random crop (half to all of the largest at the canvas' aspect), flipped at random, resized."""
    full_h, full_w = image.shape[:2]
    aspect = width / height
    crop_h = min(full_h, full_w / aspect) * rng.uniform(0.5, 1.0)
    crop_w = crop_h * aspect
    y, x = rng.uniform(0, full_h - crop_h), rng.uniform(0, full_w - crop_w)
    crop = image[int(y) : int(y + crop_h), int(x) : int(x + crop_w)]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return cv2.resize(np.ascontiguousarray(crop), (width, height), interpolation=cv2.INTER_AREA)
