"""Camera degradations for training clips: what real cameras do to a frame and rendered clips lack.

Real footage (vtest.avi's street camera, a phone's clip of a desk) is softer, noisier, more compressed
and differently white-balanced than the generator's frames and the labelled photos. With
`--degrade P`, a clip is degraded with probability P, at the training input size, by two of: defocus
blur, a lower resolution scaled back up, JPEG compression, sensor noise, a white-balance shift. One
camera films the whole clip, so every frame gets the same settings; only the noise is drawn afresh
for each frame, as a sensor's is. Masks are left alone: a degraded frame shows the same object in the
same place.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

Rng = np.random.Generator

KINDS = ("blur", "resolution", "jpeg", "noise", "white_balance")
KINDS_PER_CLIP = 2


@dataclass(frozen=True)
class Degradation:
    """One clip's camera. The neutral value of each field leaves the frame as it is."""

    blur: float = 0.0  # Gaussian sigma, input pixels
    resolution: float = 1.0  # the camera's resolution as a fraction of the input's
    jpeg_quality: int = 100  # 100: not re-encoded
    noise: float = 0.0  # sigma, 0-255 units
    white_balance: tuple[float, float, float] = (1.0, 1.0, 1.0)  # RGB gains


def sample_degradation(rng: Rng, probability: float) -> Degradation | None:
    """A clip's degradation, or None (no draw at all when `probability` is 0, so runs without
    `--degrade` keep their exact sample stream)."""
    if probability <= 0 or rng.random() >= probability:
        return None
    chosen = set(rng.choice(KINDS, KINDS_PER_CLIP, replace=False).tolist())
    red, green, blue = (float(g) for g in rng.uniform(0.9, 1.1, 3)) if "white_balance" in chosen else (1.0, 1.0, 1.0)
    return Degradation(
        blur=float(rng.uniform(0.5, 1.3)) if "blur" in chosen else 0.0,
        resolution=float(rng.uniform(0.35, 0.7)) if "resolution" in chosen else 1.0,
        jpeg_quality=int(rng.integers(20, 60)) if "jpeg" in chosen else 100,
        noise=float(rng.uniform(2.0, 8.0)) if "noise" in chosen else 0.0,
        white_balance=(red, green, blue),
    )


def degrade(frame: np.ndarray, camera: Degradation, rng: Rng) -> np.ndarray:
    """`frame` (uint8 h,w,3 RGB) as `camera` would film it."""
    height, width = frame.shape[:2]
    image = frame
    if camera.resolution < 1.0:
        small = (max(8, round(width * camera.resolution)), max(8, round(height * camera.resolution)))
        image = cv2.resize(cv2.resize(image, small, interpolation=cv2.INTER_AREA), (width, height),
                           interpolation=cv2.INTER_LINEAR)
    if camera.blur > 0:
        image = cv2.GaussianBlur(image, (0, 0), camera.blur)
    if camera.white_balance != (1.0, 1.0, 1.0) or camera.noise > 0:
        pixels = image.astype(np.float32) * np.asarray(camera.white_balance, np.float32)
        if camera.noise > 0:
            pixels += rng.standard_normal(pixels.shape, dtype=np.float32) * np.float32(camera.noise)
        image = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    if camera.jpeg_quality < 100:  # last, as a camera encodes what its sensor saw
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)  # JPEG's chroma planes assume OpenCV's BGR order
        ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, camera.jpeg_quality])
        decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR) if ok else None
        if decoded is None:
            raise RuntimeError("OpenCV could not JPEG-encode a training frame")
        image = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(image)
