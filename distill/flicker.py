"""Temporal stability: how much a model's mask changes between consecutive frames where it should not.

Flicker = mean absolute change of the predicted saliency (0..1) between consecutive frames, over
the pairs of consecutive annotated frames whose ground truth barely changes: at most
`STILL_GT_CHANGE` = 0.5 % of the frame's pixels switch label between the two frames. On those pairs
a perfect model's mask changes by at most that much, so what a model changes beyond it is flicker
(per-frame models shimmer at boundaries, blink on low-contrast objects, jump between candidate
objects). 0.5 % is a quarter of the synthetic validation set's consecutive pairs (median change
0.9 %, 90th percentile 2.1 %): still enough pairs (213 of 840) for a stable mean.

Reported beside it: `flicker_gt`, the ground truth's own mean change over the same pairs (the floor a
perfect model would reach), and `flicker_pairs`, their number. Pairs are pooled over all sequences
(each pair counts once), because the number of still pairs differs a lot between sequences.
"""

from __future__ import annotations

import cv2
import numpy as np

# Largest fraction of a frame's pixels whose ground-truth label may change for a pair to count as still.
STILL_GT_CHANGE = 0.005


def mask_change(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two uint8 (0..255) or bool masks, in [0, 1]."""
    return float(np.abs(_unit(a) - _unit(b)).mean())


def _unit(mask: np.ndarray) -> np.ndarray:
    return mask.astype(np.float32) if mask.dtype == bool else mask.astype(np.float32) / 255.0


class FlickerMeter:
    """Feed one sequence's frames in order as (index, prediction, ground truth); pairs are t-1, t."""

    def __init__(self, threshold: float = STILL_GT_CHANGE) -> None:
        self.threshold = threshold
        self.changes: list[float] = []
        self.gt_changes: list[float] = []
        self._previous: tuple[int, np.ndarray, np.ndarray] | None = None

    def step(self, index: int, prediction: np.ndarray, gt: np.ndarray) -> None:
        if prediction.shape != gt.shape:
            prediction = cv2.resize(prediction, (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_LINEAR)
        gt = gt > 0 if gt.dtype != bool else gt
        if self._previous is not None and self._previous[0] == index - 1:
            _, previous_prediction, previous_gt = self._previous
            gt_change = float((gt != previous_gt).mean())
            if gt_change <= self.threshold:
                self.changes.append(mask_change(prediction, previous_prediction))
                self.gt_changes.append(gt_change)
        self._previous = (index, prediction, gt)


def pooled(meters: list[FlickerMeter]) -> dict[str, float | int | None]:
    """Flicker over the still pairs of all sequences (None when there is none)."""
    changes = [c for meter in meters for c in meter.changes]
    gt_changes = [c for meter in meters for c in meter.gt_changes]
    return {
        "flicker": float(np.mean(changes)) if changes else None,
        "flicker_gt": float(np.mean(gt_changes)) if gt_changes else None,
        "flicker_pairs": len(changes),
    }
