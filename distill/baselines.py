"""Classic baselines, evaluated through the same code as the student so comparisons are measured.

`frame_difference_clip` is the textbook motion map: the absolute difference of consecutive
grayscale frames, blurred, normalised to 0..255 per frame. It knows nothing about objects, so
it marks moving background, misses still objects and lights up camera motion; a learned video
saliency model has to beat it by a wide margin to be worth anything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import cv2
import numpy as np


def _gray(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32)


def motion_map(gray: np.ndarray, other: np.ndarray, blur_fraction: float = 0.01) -> np.ndarray:
    """|gray - other|, Gaussian-blurred (sigma a fraction of the frame size), scaled to uint8 0..255."""
    difference = np.abs(gray - other)
    sigma = max(1.0, blur_fraction * max(gray.shape))
    difference = cv2.GaussianBlur(difference, (0, 0), sigmaX=sigma)
    low, high = float(difference.min()), float(difference.max())
    if high - low < 1e-6:  # no motion at all: nothing is salient
        return np.zeros(gray.shape, np.uint8)
    return np.rint((difference - low) * (255.0 / (high - low))).astype(np.uint8)


def frame_difference_clip(frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Masks for RGB uint8 frames in order; frame t differs from t-1, the first frame from the second.

    Streams with one frame of look-ahead at the start only; a one-frame clip gives an empty map.
    """
    iterator = iter(frames)
    first = next(iterator, None)
    if first is None:
        return
    previous = _gray(first)
    second = next(iterator, None)
    if second is None:
        yield np.zeros(previous.shape, np.uint8)
        return
    current = _checked_gray(second, previous)
    yield motion_map(previous, current)
    yield motion_map(current, previous)
    previous = current
    for frame in iterator:
        current = _checked_gray(frame, previous)
        yield motion_map(current, previous)
        previous = current


def _checked_gray(frame: np.ndarray, previous: np.ndarray) -> np.ndarray:
    gray = _gray(frame)
    if gray.shape != previous.shape:
        raise ValueError(f"frame size changed inside a clip: {previous.shape} -> {gray.shape}")
    return gray


# CLI names of the baselines `vsod-train eval --baseline` knows.
BASELINES: dict[str, Callable[[Iterable[np.ndarray]], Iterator[np.ndarray]]] = {
    "framediff": frame_difference_clip,
}
