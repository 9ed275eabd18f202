"""Appearance for synthetic clips: textures, object silhouettes and colours that contrast on purpose.

Textures are float32 HxWx3 RGB in [0, 1]; silhouettes are uint8 alpha (0..255, anti-aliased edges).
Real photo textures come from the images scikit-image ships inside its wheel, read straight from the
package folder so nothing is ever downloaded (its `skimage.data` fetchers may fall back to the network).
"""

from __future__ import annotations

from functools import cache, lru_cache
from pathlib import Path

import cv2
import numpy as np

Rng = np.random.Generator

# Colour photos: patches give natural, object-like detail to foreground and background textures.
COLOUR_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg",
                 "ihc.png", "retina.jpg", "motorcycle_left.png")
# Grey, texture-like photos, tinted with two colours (bricks, grass, gravel, craters, coins).
GREY_PHOTOS = ("brick.png", "grass.png", "gravel.png", "moon.png", "coins.png", "camera.png")
# Textures without a distinct object in them, safe for backgrounds.
BACKGROUND_GREYS = ("brick.png", "grass.png", "gravel.png", "moon.png")
# (Not astronaut, rocket, cat or cup: they hold an obvious object that the ground truth would not mark.)
BACKGROUND_COLOURS = ("hubble_deep_field.jpg", "ihc.png", "retina.jpg")


def _skimage_data_dir() -> Path | None:
    try:
        import skimage
    except ImportError:  # scikit-image is a [train] dependency; without it, procedural textures only
        return None
    return Path(skimage.__file__).parent / "data"


@cache
def load_photo(name: str) -> np.ndarray | None:
    """A shipped photo as float32 RGB in [0, 1] (longest side <= 768), or None if this wheel lacks it."""
    folder = _skimage_data_dir()
    if folder is None or not (folder / name).is_file():
        return None
    image = cv2.imread(str(folder / name), cv2.IMREAD_COLOR)
    if image is None:
        return None
    scale = 768 / max(image.shape[:2])
    if scale < 1:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0


def available_photos(names: tuple[str, ...]) -> list[str]:
    return [name for name in names if load_photo(name) is not None]


# ---------------------------------------------------------------------------------------- colour


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """N,3 RGB in [0, 1] -> N,3 CIE Lab (L in 0..100)."""
    return cv2.cvtColor(rgb.reshape(1, -1, 3).astype(np.float32), cv2.COLOR_RGB2LAB).reshape(-1, 3)


def colour_samples(image: np.ndarray, grid: int = 8) -> np.ndarray:
    """Lab colours of a grid x grid summary of an image: what a foreground must stand out from."""
    small = cv2.resize(image, (grid, grid), interpolation=cv2.INTER_AREA)
    return rgb_to_lab(small.reshape(-1, 3))


def random_colours(rng: Rng, count: int) -> np.ndarray:
    """Varied RGB colours: half saturated (HSV), half anywhere in the cube."""
    hsv = np.stack([rng.uniform(0, 360, count), rng.uniform(0.35, 1.0, count), rng.uniform(0.25, 1.0, count)], 1)
    saturated = cv2.cvtColor(hsv.reshape(1, -1, 3).astype(np.float32), cv2.COLOR_HSV2RGB).reshape(-1, 3)
    uniform = rng.uniform(0, 1, (count, 3)).astype(np.float32)
    return np.where(rng.random((count, 1)) < 0.5, saturated, uniform).astype(np.float32)


def contrasting_colours(rng: Rng, reference: np.ndarray, count: int, min_distance: float = 32.0) -> np.ndarray:
    """`count` RGB colours, each at least `min_distance` (Lab) from 90 % of the reference colours."""
    candidates = random_colours(rng, 160)
    distances = np.linalg.norm(rgb_to_lab(candidates)[:, None, :] - reference[None, :, :], axis=2)
    score = np.quantile(distances, 0.1, axis=1)
    good = np.flatnonzero(score >= min_distance)
    if len(good) < count:
        good = np.argsort(score)[-max(count, 8):]
    return candidates[rng.choice(good, size=count, replace=len(good) < count)]


def recolour(texture: np.ndarray, colour: np.ndarray, spread: float) -> np.ndarray:
    """Move a texture's mean to `colour` (Lab) and scale its variation to `spread` Lab units: keeps
    the structure, controls how much it stands out."""
    lab = cv2.cvtColor(texture.astype(np.float32), cv2.COLOR_RGB2LAB)
    mean, std = lab.reshape(-1, 3).mean(0), lab.reshape(-1, 3).std(0).mean() + 1e-3
    target = rgb_to_lab(colour.reshape(1, 3))[0]
    lab = (lab - mean) * min(1.0, spread / std) + target
    return np.clip(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB), 0.0, 1.0)


# -------------------------------------------------------------------------------------- textures


def smooth_noise(rng: Rng, height: int, width: int, cell: float, octaves: int = 3) -> np.ndarray:
    """Multi-octave value noise in [0, 1]: upsampled random grids, coarse to fine."""
    total = np.zeros((height, width), np.float32)
    weight = 1.0
    for _ in range(octaves):
        gh, gw = max(2, int(height / cell) + 2), max(2, int(width / cell) + 2)
        grid = rng.random((gh, gw), dtype=np.float32)
        total += weight * cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
        weight, cell = weight * 0.5, max(cell / 2.0, 2.0)
    total -= total.min()
    return total / max(float(total.max()), 1e-6)


def _blend(t: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a[None, None, :] * (1.0 - t[..., None]) + b[None, None, :] * t[..., None]


def _coords(height: int, width: int, angle: float) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    return x * np.cos(angle) + y * np.sin(angle)


def _random_photo(rng: Rng, names: list[str]) -> np.ndarray:
    name = names[int(rng.integers(len(names)))]
    photo = load_photo(name)
    if photo is None:  # `available_photos` lists only the photos this wheel ships
        raise FileNotFoundError(f"photo {name} is not in this scikit-image wheel")
    return photo


def _photo_crop(rng: Rng, photo: np.ndarray, height: int, width: int, zoom: tuple[float, float]) -> np.ndarray:
    ph, pw = photo.shape[:2]
    scale = rng.uniform(*zoom) * max(height / ph, width / pw)
    ch, cw = min(ph, max(4, int(height / scale))), min(pw, max(4, int(width / scale)))
    y, x = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
    crop = photo[y : y + ch, x : x + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return cv2.resize(np.ascontiguousarray(crop), (width, height), interpolation=cv2.INTER_LINEAR)


def texture(rng: Rng, kind: str, height: int, width: int, colours: np.ndarray, photos: list[str]) -> np.ndarray:
    """One texture of `kind` painted with `colours` (at least 2 RGB rows); photos recoloured to them."""
    a, b = colours[0], colours[1]
    size = float(min(height, width))
    if kind == "solid":
        return np.broadcast_to(a, (height, width, 3)).astype(np.float32).copy()
    if kind == "gradient":
        t = _coords(height, width, rng.uniform(0, np.pi))
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
        return _blend(t * rng.uniform(0.4, 1.0), a, b)
    if kind == "stripes":
        period = size * rng.uniform(0.08, 0.35)
        wave = 0.5 + 0.5 * np.sin(_coords(height, width, rng.uniform(0, np.pi)) * (2 * np.pi / period))
        sharp = rng.uniform(1.0, 8.0)
        return _blend(np.clip((wave - 0.5) * sharp + 0.5, 0, 1), a, b)
    if kind == "checker":
        cell = max(2, int(size * rng.uniform(0.06, 0.25)))
        y, x = np.mgrid[0:height, 0:width]
        return _blend(((x // cell + y // cell) % 2).astype(np.float32), a, b)
    if kind == "spots":
        base = _blend(np.zeros((height, width), np.float32), a, b)
        for _ in range(int(rng.integers(4, 16))):
            centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            cv2.circle(base, centre, max(1, int(size * rng.uniform(0.04, 0.14))), b.tolist(), -1, cv2.LINE_AA)
        return base
    if kind == "noise":
        return _blend(smooth_noise(rng, height, width, size * rng.uniform(0.1, 0.6)), a, b)
    if kind == "tinted" and photos:
        grey = _photo_crop(rng, _random_photo(rng, photos), height, width, (0.5, 2.0))
        t = grey.mean(axis=2)
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
        return _blend(t, a, b)
    if kind == "photo" and photos:
        return _photo_crop(rng, _random_photo(rng, photos), height, width, (0.6, 3.0))
    return _blend(smooth_noise(rng, height, width, size * 0.3), a, b)  # a kind whose photos are missing


# --------------------------------------------------------------------------------- scene textures

FG_TEXTURES = ("solid", "gradient", "stripes", "checker", "spots", "noise", "tinted", "photo")
FG_WEIGHTS = (0.14, 0.14, 0.12, 0.06, 0.08, 0.14, 0.12, 0.2)
BG_TEXTURES = ("noise", "tinted", "photo", "gradient", "stripes")
BG_WEIGHTS = (0.25, 0.25, 0.3, 0.1, 0.1)


def choice(rng: Rng, items: tuple[str, ...], weights: tuple[float, ...]) -> str:
    p = np.asarray(weights, float)
    return items[int(rng.choice(len(items), p=p / p.sum()))]


def background(rng: Rng, height: int, width: int, busy: bool = False) -> np.ndarray:
    """A canvas of one texture, or two or three regions split by a wavy horizon (ground, wall, sky).

    `busy` (for camouflage) gives a sharp, high-contrast texture, so that a patch of it moving
    against the rest is visible through motion alone.
    """
    def one() -> np.ndarray:
        kind = "tinted" if busy else choice(rng, BG_TEXTURES, BG_WEIGHTS)
        photos = available_photos(BACKGROUND_GREYS if kind == "tinted" else BACKGROUND_COLOURS)
        colours = random_colours(rng, 2)
        if busy:
            colours[1] = colours[0] * rng.uniform(0.2, 0.45)
        elif kind in ("stripes", "gradient"):  # keep busy patterns from out-shouting the objects
            colours[1] = colours[0] * 0.6 + colours[1] * 0.4
        return texture(rng, kind, height, width, colours, photos)

    canvas = one()
    if not busy and rng.random() < 0.4:
        for _ in range(int(rng.integers(1, 3))):
            x = np.arange(width, dtype=np.float32)
            level, cycles, phase = rng.uniform(0.25, 0.75), rng.uniform(2, 8), rng.uniform(0, 6)
            wave = height * (level + 0.08 * np.sin(x / width * cycles + phase))
            step = (np.arange(height, dtype=np.float32)[:, None] > wave[None, :]).astype(np.float32)
            below = cv2.GaussianBlur(step, (0, 0), 1.5)[..., None]
            canvas = canvas * (1 - below) + one() * below
    if not busy and rng.random() < 0.5:  # photographic backgrounds are never perfectly sharp
        canvas = cv2.GaussianBlur(canvas, (0, 0), rng.uniform(0.5, 2.0))
    return canvas.astype(np.float32)


def object_texture(rng: Rng, size: int, reference: np.ndarray) -> np.ndarray:
    """A foreground texture whose colours stand out from `reference` (Lab samples of the scene)."""
    kind = choice(rng, FG_TEXTURES, FG_WEIGHTS)
    colours = contrasting_colours(rng, reference, 2, min_distance=30.0)
    if rng.random() < 0.6:  # mostly one dominant hue, so the object reads as one thing
        colours[1] = np.clip(colours[0] * rng.uniform(0.5, 1.3) + rng.uniform(-0.1, 0.1, 3), 0, 1)
    photos = available_photos(GREY_PHOTOS if kind == "tinted" else COLOUR_PHOTOS)
    rgb = texture(rng, kind, size, size, colours, photos)
    if kind == "photo":  # natural detail, but recoloured to stand out from this background
        rgb = recolour(rgb, colours[0], spread=rng.uniform(6.0, 16.0))
    shade = rng.uniform(0.0, 0.3)  # light from one side, a hint of volume
    ramp = np.linspace(-1, 1, size, dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    rgb *= 1.0 + shade * (np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None])[..., None]
    return np.clip(rgb, 0, 1).astype(np.float32)


# ------------------------------------------------------------------------------------ silhouettes

SHAPES = ("ellipse", "polygon", "star", "blob", "creature", "vehicle", "horse", "ring", "rounded")
SHAPE_WEIGHTS = (0.13, 0.13, 0.08, 0.2, 0.16, 0.1, 0.08, 0.04, 0.08)


def _polygon(rng: Rng, centre: float, radius: float, count: int, jitter: float) -> np.ndarray:
    # Evenly spread corners, jittered: random angles alone make slivers.
    angles = np.linspace(0, 2 * np.pi, count, endpoint=False) + rng.uniform(-0.35, 0.35, count) * 2 * np.pi / count
    radii = radius * rng.uniform(1.0 - jitter, 1.0, count)
    return np.stack([centre + radii * np.cos(angles), centre + radii * np.sin(angles)], 1)


def _fill(alpha: np.ndarray, points: np.ndarray) -> None:
    cv2.fillPoly(alpha, [np.round(points * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)


def _ellipse(alpha: np.ndarray, centre, axes, angle: float, value: int = 255) -> None:
    cv2.ellipse(alpha, (int(centre[0]), int(centre[1])), (max(1, int(axes[0])), max(1, int(axes[1]))),
                angle, 0, 360, value, -1, cv2.LINE_AA)


def silhouette(rng: Rng, kind: str, size: int) -> np.ndarray:
    """uint8 size x size alpha of a `kind` shape centred in the square, roughly filling it."""
    alpha = np.zeros((size, size), np.uint8)
    c, r = (size - 1) / 2.0, size / 2.0 - 2.0
    if kind == "ellipse":
        _ellipse(alpha, (c, c), (r, r * rng.uniform(0.35, 1.0)), 0)
    elif kind == "polygon":
        _fill(alpha, _polygon(rng, c, r, int(rng.integers(3, 9)), 0.45))
    elif kind == "star":
        spikes = int(rng.integers(4, 8))
        angles = np.linspace(0, 2 * np.pi, 2 * spikes, endpoint=False) + rng.uniform(0, np.pi)
        radii = np.where(np.arange(2 * spikes) % 2 == 0, r, r * rng.uniform(0.35, 0.6))
        _fill(alpha, np.stack([c + radii * np.cos(angles), c + radii * np.sin(angles)], 1))
    elif kind == "blob":
        y, x = np.mgrid[0:size, 0:size].astype(np.float32)
        falloff = 1.0 - np.hypot(x - c, y - c) / r
        field = falloff + 0.8 * (smooth_noise(rng, size, size, size * rng.uniform(0.25, 0.5), 2) - 0.5)
        blob = (field > 0.25).astype(np.uint8)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(blob, connectivity=8)
        if count > 1:  # one connected object, not scattered islands
            blob = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
        alpha = cv2.GaussianBlur(blob.astype(np.float32) * 255, (0, 0), 0.8).astype(np.uint8)
    elif kind == "creature":  # body, head and limbs: thin parts like people and animals have
        body = (r * rng.uniform(0.35, 0.55), r * rng.uniform(0.2, 0.35))
        _ellipse(alpha, (c, c), body, rng.uniform(-30, 30))
        head = (c + rng.uniform(-0.2, 0.2) * r, c - body[0] * rng.uniform(0.9, 1.3))
        _ellipse(alpha, head, (r * 0.2, r * rng.uniform(0.16, 0.24)), 0)
        for _ in range(int(rng.integers(2, 5))):
            start = (c + rng.uniform(-0.6, 0.6) * body[1], c + rng.uniform(-0.3, 0.5) * body[0])
            angle = rng.uniform(-np.pi, np.pi)
            length = r * rng.uniform(0.4, 0.85)
            end = np.clip((start[0] + length * np.cos(angle), start[1] + length * np.sin(angle)), 2, size - 3)
            thickness = max(2, int(r * rng.uniform(0.07, 0.16)))
            cv2.line(alpha, (int(start[0]), int(start[1])), (int(end[0]), int(end[1])), 255, thickness, cv2.LINE_AA)
    elif kind == "vehicle":  # a box with a cabin and wheels
        w, h = r * 0.95, r * rng.uniform(0.25, 0.4)
        cv2.rectangle(alpha, (int(c - w), int(c - h * 0.2)), (int(c + w), int(c + h)), 255, -1, cv2.LINE_AA)
        cabin = rng.uniform(0.35, 0.6) * w
        _fill(alpha, np.array([[c - cabin, c - h * 0.2], [c - cabin * 0.6, c - h * 1.2],
                               [c + cabin * 0.7, c - h * 1.2], [c + cabin, c - h * 0.2]]))
        for x in (c - w * 0.6, c + w * 0.6):
            cv2.circle(alpha, (int(x), int(c + h)), max(2, int(h * 0.55)), 255, -1, cv2.LINE_AA)
    elif kind == "horse" and (horse := _horse()) is not None:
        scale = (size - 4) / max(horse.shape)
        resized = cv2.resize(horse, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        y0, x0 = (size - resized.shape[0]) // 2, (size - resized.shape[1]) // 2
        alpha[y0 : y0 + resized.shape[0], x0 : x0 + resized.shape[1]] = resized
        if rng.random() < 0.5:
            alpha = np.ascontiguousarray(alpha[:, ::-1])
    elif kind == "ring":
        outer = r * rng.uniform(0.6, 1.0)
        _ellipse(alpha, (c, c), (r, outer), 0)
        _ellipse(alpha, (c, c), (r * rng.uniform(0.3, 0.55), outer * rng.uniform(0.3, 0.55)), 0, value=0)
    else:  # rounded rectangle
        w, h = r, r * rng.uniform(0.4, 1.0)
        k = min(w, h) * rng.uniform(0.1, 0.5)
        cv2.rectangle(alpha, (int(c - w + k), int(c - h)), (int(c + w - k), int(c + h)), 255, -1)
        cv2.rectangle(alpha, (int(c - w), int(c - h + k)), (int(c + w), int(c + h - k)), 255, -1)
        for dx in (-1, 1):
            for dy in (-1, 1):
                cv2.circle(alpha, (int(c + dx * (w - k)), int(c + dy * (h - k))), int(k), 255, -1, cv2.LINE_AA)
    if (alpha > 127).mean() < 0.08:  # a degenerate draw (a sliver, a stick figure): a solid body instead
        alpha[:] = 0
        _ellipse(alpha, (c, c), (r, r * rng.uniform(0.4, 1.0)), 0)
    return alpha


@lru_cache(maxsize=1)
def _horse() -> np.ndarray | None:
    """scikit-image's horse silhouette (a real animal outline), cropped to its bounding box."""
    folder = _skimage_data_dir()
    image = cv2.imread(str(folder / "horse.png"), cv2.IMREAD_GRAYSCALE) if folder else None
    if image is None:
        return None
    shape = (image < 128).astype(np.uint8) * 255  # the file is a black horse on white
    ys, xs = np.nonzero(shape)
    return shape[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
