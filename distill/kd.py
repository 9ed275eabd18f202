"""Knowledge-distillation losses: the student's features and maps mimic frozen teachers'.

    spatial KD (SKD):  adapter_s(student.spatial_features)  ~ spatial teacher's stride-4 guided features
                       student final / coarse maps          ~ spatial teacher's maps
    temporal KD (TKD): adapter_t(student.temporal_features) ~ temporal teacher's ConvGRU features (stride 8,
                                                              averaged onto the student's stride-32 grid)
                       student final / coarse maps          ~ temporal teacher's maps (same clip)

Feature terms: MSE between the two maps after a parameter-free layer norm over (C, H, W) per frame,
so the term does not depend on the teachers' feature scale (the adapter could otherwise shrink it
to zero by matching a rescaled target). The 1x1 adapters map the student's channels onto the
teacher's; they exist only in training and never enter the student's weights.

Map terms: the Bernoulli KL divergence KL(p_teacher || p_student) per pixel (with a temperature T,
scaled by T^2 as in Hinton et al.), i.e. BCE against the teacher's probabilities minus the teacher's
own entropy: exactly zero when the student's map equals the teacher's, positive otherwise. The final
map is compared where the student makes it, before upsampling: at stride 4, as the teachers do, or at
stride 2 with a detail refiner, against the teacher's map upsampled.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from service.model import StudentOutput


@dataclass
class KDWeights:
    """Weights of the total loss: gt * supervised + SKD terms + TKD terms."""

    gt: float = 1.0
    spatial_feature: float = 1.0
    spatial_map: float = 1.0
    temporal_feature: float = 1.0
    temporal_map: float = 1.0
    coarse: float = 0.5  # the coarse map's weight relative to the final map inside each map term
    temperature: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TeacherTargets:
    """What the student mimics from one teacher, for the B*T frames of a batch (time-major per clip)."""

    features: Tensor  # spatial teacher: stride-4 decoder features; temporal: ConvGRU features pooled to stride 32
    final: Tensor  # stride-4 logits (the final map before upsampling)
    coarse: Tensor  # stride-32 logits

    def half(self) -> TeacherTargets:
        """Rounded to float16: what the disk cache keeps, so cached and fresh targets are identical."""
        return TeacherTargets(*(t.detach().to(torch.float16) for t in (self.features, self.final, self.coarse)))

    def float(self) -> TeacherTargets:
        return TeacherTargets(*(t.float() for t in (self.features, self.final, self.coarse)))


class KDAdapters(nn.Module):
    """1x1 convolutions from the student's feature channels to each teacher's (training only)."""

    def __init__(self, spatial: tuple[int, int] | None, temporal: tuple[int, int] | None) -> None:
        """`spatial`/`temporal`: (student channels, teacher channels), or None without that teacher."""
        super().__init__()
        self.spatial = nn.Conv2d(*spatial, kernel_size=1) if spatial else None
        self.temporal = nn.Conv2d(*temporal, kernel_size=1) if temporal else None

    def forward(self, output: StudentOutput) -> dict[str, Tensor]:
        adapted: dict[str, Tensor] = {}
        if self.spatial is not None:
            adapted["spatial"] = self.spatial(output.spatial_features)
        if self.temporal is not None:
            adapted["temporal"] = self.temporal(output.temporal_features)
        return adapted


def layer_normalise(x: Tensor, eps: float = 1e-5) -> Tensor:
    """Zero mean, unit variance over (C, H, W) of each row, without learned parameters."""
    return F.layer_norm(x, x.shape[1:], eps=eps)


def feature_mimic_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """MSE of layer-normalised features; the student's are resized to the teacher's grid if needed."""
    if student.shape[1] != teacher.shape[1]:
        raise ValueError(f"adapted student features have {student.shape[1]} channels, the teacher's {teacher.shape[1]}")
    student, teacher = student.float(), teacher.float()
    if student.shape[-2:] != teacher.shape[-2:]:
        student = F.interpolate(student, size=teacher.shape[-2:], mode="bilinear", align_corners=False)
    return F.mse_loss(layer_normalise(student), layer_normalise(teacher))


def soft_map_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Mean per-pixel Bernoulli KL(teacher || student) at temperature T, times T^2."""
    student_logits, teacher_logits = student_logits.float(), teacher_logits.float()
    if student_logits.shape[-2:] != teacher_logits.shape[-2:]:
        teacher_logits = F.interpolate(teacher_logits, size=student_logits.shape[-2:], mode="bilinear",
                                       align_corners=False)
    student_logits, teacher_logits = student_logits / temperature, teacher_logits / temperature
    target = torch.sigmoid(teacher_logits)
    cross = F.binary_cross_entropy_with_logits(student_logits, target, reduction="none")
    entropy = F.binary_cross_entropy_with_logits(teacher_logits, target, reduction="none")
    return (cross - entropy).clamp_min(0).mean() * temperature**2


def _teacher_terms(prefix: str, output: StudentOutput, adapted: Tensor, targets: TeacherTargets,
                   feature_weight: float, map_weight: float, weights: KDWeights) -> tuple[Tensor, dict[str, float]]:
    feature = feature_mimic_loss(adapted, targets.features)
    final = soft_map_loss(output.side_logits[-1], targets.final, weights.temperature)
    coarse = soft_map_loss(output.coarse_logits, targets.coarse, weights.temperature)
    total = feature_weight * feature + map_weight * (final + weights.coarse * coarse)
    terms = {f"{prefix}_feature": float(feature.detach()), f"{prefix}_final": float(final.detach()),
             f"{prefix}_coarse": float(coarse.detach()), prefix: float(total.detach())}
    return total, terms


def distillation_loss(output: StudentOutput, adapted: dict[str, Tensor], spatial: TeacherTargets | None,
                      temporal: TeacherTargets | None, weights: KDWeights) -> tuple[Tensor, dict[str, float]]:
    """Weighted SKD + TKD terms (either teacher may be absent); returns (total, logged terms)."""
    total = output.logits.new_zeros((), dtype=torch.float32)
    terms: dict[str, float] = {}
    if spatial is not None:
        part, named = _teacher_terms("skd", output, adapted["spatial"], spatial, weights.spatial_feature,
                                     weights.spatial_map, weights)
        total, terms = total + part, {**terms, **named}
    if temporal is not None:
        part, named = _teacher_terms("tkd", output, adapted["temporal"], temporal, weights.temporal_feature,
                                     weights.temporal_map, weights)
        total, terms = total + part, {**terms, **named}
    return total, terms
