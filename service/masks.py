"""A mask as a client asked for it: 0..255 saliency or thresholded, as PNG or raw rows (images and streams)."""

from __future__ import annotations

import numpy as np

from .protocol import MaskFormat
from .video import encode_png


def apply_threshold(mask: np.ndarray, threshold: float | None) -> np.ndarray:
    """None keeps 0..255 saliency; a threshold in 0..1 gives a 0/255 mask (>= threshold is salient)."""
    if threshold is None:
        return mask
    return np.where(mask >= round(threshold * 255), 255, 0).astype(np.uint8)


def encode_mask(mask: np.ndarray, fmt: MaskFormat, threshold: float | None) -> bytes:
    """PNG, or raw row-major bytes."""
    mask = apply_threshold(mask, threshold)
    return encode_png(mask) if fmt == "png" else np.ascontiguousarray(mask).tobytes()
