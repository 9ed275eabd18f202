"""Training losses: supervised saliency (BCE + soft IoU with deep supervision).

Every loss function returns `(total, terms)`: a scalar tensor to back-propagate and a dict of
named float terms for the training log. The distillation losses (spatial and temporal KD) have the
same shape and live in `distill.kd`; the distillation trainer adds their totals to this one.
Targets may be soft (a teacher's maps, in [0, 1]): BCE with logits and the soft IoU take them as they are.
`adjacent_change_loss` is temporal KD from such maps: the student's change between adjacent frames
mimics the teacher's change.

Shapes follow `STKDStudent.forward_clip`: outputs are flattened to B*T rows (time-major within
each clip), ground truth comes from `ClipDataset` as masks B,T,1,H,W and `valid` B,T.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.nn import functional as F

from service.model import StudentOutput


@dataclass
class SaliencyLossWeights:
    """Weights of the supervised terms; the final map dominates, deeper maps only guide."""

    bce: float = 1.0
    iou: float = 1.0
    final: float = 1.0
    # Side outputs by stride. The last side output *is* the final map before upsampling, so it is not
    # supervised again (that would only double the final term's weight): strides 16 and 8 are, and
    # stride 4 too when a detail refiner makes the final map at stride 2.
    sides: dict[int, float] = field(default_factory=lambda: {16: 0.5, 8: 0.5, 4: 0.5})
    coarse: float = 0.25


def resize_target(masks: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    """Ground truth at another scale: area averaging keeps soft boundaries instead of aliasing."""
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks
    return F.interpolate(masks, size=tuple(size), mode="area")


def bce_iou(logits: Tensor, target: Tensor, smooth: float = 1.0) -> tuple[Tensor, Tensor]:
    """(binary cross-entropy, soft-Jaccard loss) of N,1,h,w logits against targets in [0, 1].

    BCE is the per-pixel mean; the IoU loss is computed per map and averaged, so small objects
    weigh as much as large ones. `smooth` keeps empty ground truth with an empty prediction at ~0.
    """
    bce = F.binary_cross_entropy_with_logits(logits, target)
    probability = torch.sigmoid(logits)
    intersection = (probability * target).flatten(1).sum(1)
    union = (probability + target).flatten(1).sum(1) - intersection
    iou = 1.0 - (intersection + smooth) / (union + smooth)
    return bce, iou.mean()


def select_valid(output: StudentOutput, masks: Tensor, valid: Tensor) -> tuple[list[Tensor], Tensor]:
    """Rows of the flattened output that have ground truth, with their masks (N,1,H,W).

    Returns the maps in supervision order [final, sides..., coarse] restricted to valid rows.
    """
    flat_masks = masks.flatten(0, 1).float()
    rows = valid.flatten().to(torch.bool)
    maps = [output.logits, *output.side_logits[:-1], output.coarse_logits]
    return [m[rows] for m in maps], flat_masks[rows]


def saliency_loss(
    output: StudentOutput, masks: Tensor, valid: Tensor, weights: SaliencyLossWeights | None = None
) -> tuple[Tensor, dict[str, float]]:
    """Deep-supervised BCE + IoU over the frames whose `valid` flag is set.

    masks: B,T,1,H,W in [0, 1] at the input resolution; valid: B,T bools. A batch without any
    valid frame gives a zero loss that still back-propagates (zero gradients), so the trainer
    never has to special-case it.
    """
    weights = weights or SaliencyLossWeights()
    maps, target = select_valid(output, masks, valid)
    height = output.logits.shape[-2]
    strides = [height // m.shape[-2] for m in output.side_logits[:-1]]
    missing = [stride for stride in strides if stride not in weights.sides]
    if missing:
        raise ValueError(f"no side weight for stride {missing[0]} (weights for strides {sorted(weights.sides)})")
    # Terms named by stride (final, side16, side8, coarse) so logs read the same at any input size.
    names = ["final", *(f"side{stride}" for stride in strides), "coarse"]
    if target.shape[0] == 0:
        zero = output.logits.sum() * 0.0
        return zero, {"loss": 0.0, "bce": 0.0, "iou": 0.0, **dict.fromkeys(names, 0.0), "valid_frames": 0.0}

    scale_weights = [weights.final, *(weights.sides[stride] for stride in strides), weights.coarse]
    total = maps[0].new_zeros(())
    terms: dict[str, float] = {"bce": 0.0, "iou": 0.0}
    for name, scale_weight, logits in zip(names, scale_weights, maps, strict=True):
        bce, iou = bce_iou(logits, resize_target(target, logits.shape[-2:]))
        term = weights.bce * bce + weights.iou * iou
        total = total + scale_weight * term
        terms[name] = float(term.detach())
        if name == "final":  # the headline numbers are those of the map users get
            terms["bce"], terms["iou"] = float(bce.detach()), float(iou.detach())
    terms["loss"] = float(total.detach())
    terms["valid_frames"] = float(target.shape[0])
    return total, terms


def adjacent_change_loss(output: StudentOutput, masks: Tensor, valid: Tensor, clips: Tensor) -> tuple[Tensor, dict[str, float]]:
    """Temporal KD from a teacher's maps of adjacent frames: mean |(p_t - p_t-1) - (m_t - m_t-1)|.

    p is the student's final map before upsampling (probabilities at stride 4, or 2 with a refiner), m
    the target resized to it; the pairs are the adjacent frames of the clips selected by `clips` (B
    bools, e.g. the teacher-labelled ones) that both have a target. It is zero when the student
    changes from frame to frame exactly as the teacher does, whatever the maps themselves, so it adds
    what the per-frame term cannot: a penalty on flicker the teacher does not have and on motion it
    misses. No flow is needed (the teacher labelled each frame) and nothing of it runs at inference.
    Consistency distillation of this kind is Liu et al., "Efficient Semantic Video Segmentation with
    Per-frame Inference" (ECCV 2020), there on features and with a flow-warped target.
    """
    batch, length = masks.shape[:2]
    final = output.side_logits[-1]
    probability = torch.sigmoid(final.float()).unflatten(0, (batch, length))
    target = resize_target(masks.flatten(0, 1).float(), final.shape[-2:]).unflatten(0, (batch, length))
    pairs = valid[:, 1:] & valid[:, :-1] & clips[:, None].to(torch.bool)
    if length < 2 or not pairs.any():
        return final.sum() * 0.0, {"adjacent_change": 0.0, "adjacent_pairs": 0.0}
    student_change = (probability[:, 1:] - probability[:, :-1])[pairs]
    teacher_change = (target[:, 1:] - target[:, :-1])[pairs]
    loss = (student_change - teacher_change).abs().mean()
    return loss, {"adjacent_change": float(loss.detach()), "adjacent_pairs": float(pairs.sum())}
