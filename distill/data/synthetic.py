"""Procedural video clips with exact ground truth, written in the DAVIS-2016 layout.

Each clip: 1-3 salient objects (varied silhouettes and textures, coloured to contrast with the scene)
that move, turn and scale smoothly in frame coordinates, over a textured background seen through a
panning, zooming camera; faint distractors that belong to the background (not salient, not in the mask);
lighting changes, sensor noise, blur; objects leaving or entering the frame; and sometimes one
camouflaged object cut from the background itself, so only its motion gives it away.

Saliency is thus defined by contrast plus independent motion, which is what the student must learn
from colour and from the previous frame. Deterministic by seed: sequence i of a split draws from
SeedSequence([seed, crc32(split), i]), so a clip never depends on how many others were generated.

With `CompositeAssets` (`--cutouts ROOT --backgrounds DIR...`), the same scenes are built from real
objects (cut out by a teacher's soft maps) over real backgrounds: "composite" clips, named `cmp-...`,
drawn from their own seed stream. Camouflage stays in the plain clips: a real object is not cut from
its own background.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from . import textures as tx
from .composites import CompositeAssets, Scenery
from .provenance import COMPOSITES
from .render import Camera, Effects, Layer, Scene, render_frame

Rng = np.random.Generator

# Share of plain clips whose one object is camouflaged (cut from the background: only motion reveals
# it). `--camouflage 1` makes a motion-only set, the test of the student's temporal path.
CAMOUFLAGE_SHARE = 0.08


@dataclass(frozen=True)
class SceneStyle:
    """How clips are filmed beyond what the seed draws. The defaults give the original clips byte for
    byte: a knob left at its default draws no random number, so every other draw stays in place."""

    # A salient object's radius as a share of the frame's short side (one object; two or three are smaller).
    object_size: tuple[float, float] = (0.16, 0.36)
    # Share of clips filmed with a shallow depth of field: the scenery out of focus, the salient objects
    # sharp, as a phone or a portrait lens films them (a cue real footage has and rendered clips lack).
    defocus_share: float = 0.0

    def __post_init__(self) -> None:
        low, high = self.object_size
        if not 0.02 <= low <= high <= 0.6:
            raise ValueError(f"object sizes must satisfy 0.02 <= MIN <= MAX <= 0.6 (shares of the short side), got {low} {high}")
        if not 0.0 <= self.defocus_share <= 1.0:
            raise ValueError(f"the defocused share must lie in [0, 1], got {self.defocus_share}")

    def to_record(self) -> dict[str, Any]:
        """JSON for a root's sidecar, so a model's lineage says how the clips it saw were filmed."""
        return {"object_size": list(self.object_size), "defocus_share": self.defocus_share}


# --------------------------------------------------------------------------------------- sampling


def _trajectory(rng: Rng, size: tuple[int, int], radius: float, steps: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Start and end centres in frame pixels for mode stay | leave | enter | partial."""
    height, width = size
    box = np.array([width, height], float)
    inner = lambda: box * rng.uniform(0.22, 0.78, 2)  # noqa: E731
    start = inner()
    reach = min(0.45 * min(height, width), 5.0 * steps * min(height, width) / 270)
    end = start + rng.normal(0, 1, 2) * reach * rng.uniform(0.1, 0.6)
    end = np.clip(end, box * 0.15, box * 0.85)
    if mode in ("leave", "enter", "partial"):
        side = int(rng.integers(4))
        axis, far = side % 2, side // 2  # 0: x, 1: y; 0: low edge, 1: high edge
        edge = end.copy()
        out = radius * (1.3 if mode != "partial" else rng.uniform(-0.2, 0.5))
        edge[axis] = box[axis] + out if far else -out
        if mode == "enter":
            start, end = edge, start
        else:
            end = edge
    return start, end


def sample_scene(rng: Rng, size: tuple[int, int], steps: int, assets: CompositeAssets | None = None,
                 camouflage_share: float = CAMOUFLAGE_SHARE, style: SceneStyle = SceneStyle()) -> Scene:
    """One random clip description; rendering it is deterministic. With `assets`, its background and
    salient objects are real (a composite); everything else is drawn the same way."""
    height, width = size
    short = float(min(height, width))
    canvas_h, canvas_w = int(height * 1.5) + 8, int(width * 1.5) + 8
    camouflage = rng.random() < camouflage_share and assets is None
    scenery = Scenery(tx.background(rng, canvas_h, canvas_w, busy=camouflage)) if assets is None else \
        assets.scenery(rng, (canvas_h, canvas_w), (height, width))
    background = scenery.canvas
    reference = tx.colour_samples(background)

    margin = np.array([(canvas_w - width) / 2.0, (canvas_h - height) / 2.0])
    centre = np.array([(canvas_w - 1) / 2.0, (canvas_h - 1) / 2.0])
    shake = rng.uniform(0, 0.012, 2) * short * (rng.random() < 0.6)
    travel = (margin - shake - 0.06 * short) * 0.9
    if scenery.reach is not None:  # a scene photo: the camera stays on it, not on its mirrored border
        travel = np.minimum(travel, np.maximum(scenery.reach - shake, 0.0))
    still = rng.random() < 0.25
    cam_start = centre + rng.uniform(-1, 1, 2) * travel
    cam_end = cam_start if still else centre + rng.uniform(-1, 1, 2) * travel
    zoom0 = rng.uniform(1.0, 1.15)
    zoom1 = max(1.0, zoom0 * rng.uniform(0.9, 1.15)) if rng.random() < 0.5 else zoom0
    roll = (rng.uniform(-2, 2), rng.uniform(-2, 2)) if rng.random() < 0.4 else (0.0, 0.0)
    camera = Camera(cam_start, cam_end, shake, rng.uniform(0.2, 0.6), (zoom0, zoom1), roll)

    count = 1 if camouflage else int(rng.choice([1, 2, 3], p=[0.55, 0.3, 0.15]))
    layers: list[Layer] = []
    if scenery.salient is not None:  # a scene photo's object: salient, fixed in the scenery, drawn as it is
        layers.append(Layer(background, scenery.salient, True, True, centre, centre))
    for _ in range(int(rng.integers(0, 4))):  # faint distractors: part of the scenery, not salient
        radius = short * rng.uniform(0.07, 0.22)
        n = max(8, int(2 * radius))
        where = rng.uniform(0.1, 0.9, 2) * np.array([canvas_w, canvas_h])
        # What lies beneath it, slightly shifted and re-toned: visible, but never a contrasting object.
        rgb = 0.5 * (_patch(background, where, n) + _patch(background, where + rng.normal(0, 0.3 * radius, 2), n))
        tone = rng.uniform(0.82, 1.18) * (1 + rng.uniform(-0.05, 0.05, 3))
        rgb = np.clip(rgb * tone.astype(np.float32), 0, 1)
        alpha = tx.silhouette(rng, tx.choice(rng, tx.SHAPES, tx.SHAPE_WEIGHTS), n).astype(np.float32) / 255.0
        layers.append(Layer(rgb, cv2.GaussianBlur(alpha, (0, 0), 1.0), False, True, where, where,
                            angle=rng.uniform(0, 360), scale=1.0))
    for index in range(count):
        radius = short * rng.uniform(*style.object_size) * (1.0, 0.78, 0.62)[count - 1]
        n = max(12, int(2 * radius * 1.1))
        if assets is None:
            alpha = tx.silhouette(rng, tx.choice(rng, tx.SHAPES, tx.SHAPE_WEIGHTS), n).astype(np.float32) / 255.0
        else:
            rgb, alpha = assets.cutout(rng, n)
        mode = "stay"
        if index == 0 and not camouflage and rng.random() < 0.25:
            mode = str(rng.choice(["leave", "enter", "partial"]))
        start, end = _trajectory(rng, size, radius, steps, mode)
        if camouflage:
            # Cut from the scenery it moves over: the texture matches, only the motion differs.
            rgb = _patch(background, centre + rng.uniform(-1, 1, 2) * margin * 0.8, n)
            if np.linalg.norm(end - start) < 1.5 * steps:
                end = start + rng.choice([-1, 1], 2) * 1.5 * steps / np.sqrt(2)
        elif assets is None:
            rgb = tx.object_texture(rng, n, reference)
        layer = Layer(rgb, alpha, True, False, start, end)
        layer.wobble = rng.uniform(0, 0.06, 2) * short
        layer.wobble_freq, layer.wobble_phase = rng.uniform(0.1, 0.5), rng.uniform(0, 2 * np.pi)
        layer.angle, layer.spin = rng.uniform(-30, 30), rng.uniform(-2.0, 2.0) * (rng.random() < 0.6)
        layer.scale = rng.uniform(0.85, 1.1)
        layer.growth = float(np.clip(rng.normal(0, 0.008), -0.3 / steps, 0.3 / steps))
        layer.squash = rng.uniform(0, 0.06) * (rng.random() < 0.5)
        if not camouflage and rng.random() < 0.3:
            layer.shadow = rng.uniform(0.2, 0.45)
            layer.shadow_offset = rng.normal(0, 0.04, 2) * short
        layers.append(layer)

    effects = Effects(
        gain=rng.uniform(0.8, 1.12), gain_swing=rng.uniform(0, 0.15) * (rng.random() < 0.5),
        gain_freq=rng.uniform(0.05, 0.3), tint=(1 + rng.uniform(-0.07, 0.07, 3)).astype(np.float32),
        light=rng.uniform(0.05, 0.3) * (rng.random() < 0.4), light_angle=rng.uniform(0, 2 * np.pi),
        light_drift=rng.uniform(-0.05, 0.05), noise=rng.uniform(0.003, 0.025) * (rng.random() < 0.7),
        blur=rng.uniform(0.5, 1.4) * (rng.random() < 0.25), noise_seed=int(rng.integers(2**31)),
    )
    pan = (cam_end - cam_start) / max(steps - 1, 1)
    if rng.random() < 0.15 and np.linalg.norm(pan) > 0.5:
        effects.motion_blur = int(np.clip(np.linalg.norm(pan) * 2, 3, 9)) | 1
        effects.motion_angle = float(np.arctan2(pan[1], pan[0]))
    if style.defocus_share > 0 and not camouflage and rng.random() < style.defocus_share:
        background, layers = _defocus(background, layers, float(rng.uniform(1.5, 4.0)))
    return Scene(size, steps, background, camera, layers, effects, camouflage)


def _defocus(background: np.ndarray, layers: list[Layer], sigma: float) -> tuple[np.ndarray, list[Layer]]:
    """The scenery (background and its faint distractors) blurred by `sigma` canvas pixels; the
    salient layers stay in focus."""
    blurred = [layer if layer.salient else replace(layer, rgb=cv2.GaussianBlur(layer.rgb, (0, 0), sigma))
               for layer in layers]
    return cv2.GaussianBlur(background, (0, 0), sigma), blurred


def _patch(canvas: np.ndarray, centre: np.ndarray, n: int) -> np.ndarray:
    """An n x n cut of the canvas around `centre` (reflected at the borders)."""
    matrix = np.array([[1.0, 0.0, centre[0] - n / 2.0], [0.0, 1.0, centre[1] - n / 2.0]])
    return cv2.warpAffine(canvas, matrix, (n, n), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT_101)


# ---------------------------------------------------------------------------------------- writing

SPLIT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


COMPOSITE_STREAM = 1  # composites draw from SeedSequence([seed, crc32(split), i, 1]): never a plain clip's


def sequence_rng(seed: int, split: str, index: int, composite: bool = False) -> Rng:
    entropy = [seed, zlib.crc32(split.encode()), index, *([COMPOSITE_STREAM] if composite else [])]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def sequence_name(split: str, seed: int, index: int, composite: bool = False) -> str:
    return f"{'cmp' if composite else 'syn'}-{split}-s{seed}-{index:04d}"


def _write(path: Path, image: np.ndarray, params: list[int]) -> None:
    ok, data = cv2.imencode(path.suffix, image, params)
    if not ok:
        raise RuntimeError(f"could not encode {path}")
    path.write_bytes(data.tobytes())


def merge_image_set(list_file: Path, lines: list[str], names: set[str]) -> None:
    """Keep other sequences' lines (another split or seed may share the root), replace ours."""
    kept = []
    if list_file.is_file():
        for line in list_file.read_text().splitlines():
            parts = line.split()
            if parts and Path(parts[0]).parent.name not in names:
                kept.append(line)
    list_file.parent.mkdir(parents=True, exist_ok=True)
    temporary = list_file.with_suffix(".txt.tmp")
    temporary.write_text("".join(f"{line}\n" for line in kept + lines))
    temporary.replace(list_file)


def generate_synthetic(
    root: Path | str,
    num_sequences: int,
    frames_per_sequence: int,
    seed: int,
    size: tuple[int, int] = (270, 480),
    split: str = "train",
    progress: bool = False,
    assets: CompositeAssets | None = None,
    camouflage_share: float = CAMOUFLAGE_SHARE,
    style: SceneStyle = SceneStyle(),
) -> list[str]:
    """Write `num_sequences` clips into `root` in the DAVIS-2016 layout; returns their names.

    Frames are JPEG (quality 95), masks 8-bit PNG (0/255), and `ImageSets/480p/<split>.txt` is merged,
    so train and val splits can share one root. Same arguments, same bytes. With `assets`, composite
    clips (real objects over real backgrounds), whose sources `composites.json` in the root records.
    """
    if num_sequences < 1 or frames_per_sequence < 1:
        raise ValueError("need at least one sequence of at least one frame")
    if seed < 0:
        raise ValueError(f"seed must be 0 or more, got {seed}")
    if len(size) != 2 or min(size) < 16:
        raise ValueError(f"frame size must be (height, width), each at least 16 pixels, got {size}")
    if not SPLIT_PATTERN.match(split):
        raise ValueError(f"split name {split!r} must be letters, digits, '-' or '_'")
    if not 0.0 <= camouflage_share <= 1.0:
        raise ValueError(f"the camouflaged share must lie in [0, 1], got {camouflage_share}")
    if assets is not None and camouflage_share != CAMOUFLAGE_SHARE:
        raise ValueError("composites have no camouflaged objects (a real object is not cut from its own background)")
    root = Path(root)
    size = (int(size[0]), int(size[1]))
    names, lines = [], []
    composite = assets is not None
    for index in tqdm(range(num_sequences), desc=f"synth {split}", unit="seq", disable=not progress):
        name = sequence_name(split, seed, index, composite)
        scene = sample_scene(sequence_rng(seed, split, index, composite), size, frames_per_sequence, assets,
                             camouflage_share, style)
        image_dir, mask_dir = root / "JPEGImages" / "480p" / name, root / "Annotations" / "480p" / name
        for folder in (image_dir, mask_dir):
            shutil.rmtree(folder, ignore_errors=True)  # a rerun with fewer frames leaves no stale files
            folder.mkdir(parents=True)
        for t in range(frames_per_sequence):
            frame, mask = render_frame(scene, t)
            _write(image_dir / f"{t:05d}.jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
            _write(mask_dir / f"{t:05d}.png", mask.astype(np.uint8) * 255, [cv2.IMWRITE_PNG_COMPRESSION, 3])
            lines.append(f"/JPEGImages/480p/{name}/{t:05d}.jpg /Annotations/480p/{name}/{t:05d}.png")
        names.append(name)
    merge_image_set(root / "ImageSets" / "480p" / f"{split}.txt", lines, set(names))
    if assets is not None:
        record_sources(root / COMPOSITES, f"{split}-s{seed}", {**assets.sources, "style": style.to_record()})
    return names


def record_sources(path: Path, key: str, sources: dict) -> None:
    """Where one split's composites came from, beside other splits' records (lineage of the data)."""
    records = json.loads(path.read_text()) if path.is_file() else {}
    records[key] = sources
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(records, indent=2) + "\n")
    temporary.replace(path)


# -------------------------------------------------------------------------------------------- CLI


def parse_size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"size must be HEIGHTxWIDTH, e.g. 270x480, got {text!r}")
    return int(match.group(1)), int(match.group(2))


def add_synth_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth", help="generate synthetic training/validation clips (DAVIS-2016 layout)",
        description="Procedural clips with exact masks: moving salient objects, distractors, camera motion, "
        "lighting, noise, blur, camouflage. Same seed, same bytes.",
    )
    parser.add_argument("--out", required=True, type=Path, help="dataset root (created; other splits kept)")
    parser.add_argument("--sequences", type=int, default=100, help="number of clips (default 100)")
    parser.add_argument("--frames", type=int, default=24, help="frames per clip (default 24)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--size", type=parse_size, default=(270, 480), help="frame HEIGHTxWIDTH (default 270x480)")
    parser.add_argument("--split", default="train", help="image-set name, e.g. train or val (default train)")
    parser.add_argument("--cutouts", type=Path, default=None, metavar="ROOT",
                        help="composites: cut objects out of this teacher-labelled root (`vsod-train label` on photos); "
                        "needs --backgrounds")
    parser.add_argument("--cutout-split", default="train", help="split of the --cutouts root (default train)")
    parser.add_argument("--backgrounds", type=Path, nargs="+", default=None, metavar="DIR",
                        help="composites: raster backgrounds (jpg, png, webp) under these folders, e.g. "
                        "/usr/share/backgrounds /usr/share/desktop-base")
    parser.add_argument("--scenes", type=Path, default=None, metavar="ROOT",
                        help="composites: set a share of the clips in whole photos of this teacher-labelled root "
                        "instead of a wallpaper, each photo's own object salient too (the teacher's map)")
    parser.add_argument("--scene-split", default="train", help="split of the --scenes root (default train)")
    parser.add_argument("--scene-share", type=float, default=0.5, metavar="SHARE",
                        help="with --scenes: share of the clips set in a photo (default 0.5)")
    parser.add_argument("--camouflage", type=float, default=CAMOUFLAGE_SHARE, metavar="SHARE",
                        help=f"share of clips whose one object is cut from the background, so only its motion "
                        f"reveals it (default {CAMOUFLAGE_SHARE}; 1: a motion-only set). Plain clips only")
    default = SceneStyle()
    parser.add_argument("--object-size", type=float, nargs=2, default=default.object_size, metavar=("MIN", "MAX"),
                        help="a salient object's radius as a share of the frame's short side (default "
                        f"{default.object_size[0]} {default.object_size[1]}; two or three objects are drawn smaller)")
    parser.add_argument("--defocus", type=float, default=default.defocus_share, metavar="SHARE",
                        help="share of clips with a shallow depth of field: the scenery blurred, the salient "
                        "objects sharp (default 0)")
    parser.set_defaults(func=run_synth)


def run_synth(args: argparse.Namespace) -> int:
    if (args.cutouts is None) != (args.backgrounds is None):
        raise ValueError("composites need both --cutouts ROOT and --backgrounds DIR...")
    if args.scenes is not None and args.cutouts is None:
        raise ValueError("--scenes sets composites in photos: it needs --cutouts ROOT and --backgrounds DIR...")
    style = SceneStyle(tuple(args.object_size), args.defocus)
    assets = CompositeAssets.load(args.cutouts, args.backgrounds, args.cutout_split, args.scenes, args.scene_split,
                                  args.scene_share) if args.cutouts else None
    names = generate_synthetic(args.out, args.sequences, args.frames, args.seed, args.size, args.split, progress=True,
                               assets=assets, camouflage_share=args.camouflage, style=style)
    print(f"wrote {len(names)} sequences x {args.frames} frames ({args.split}) to {args.out}")
    return 0
