"""Saliency-guided decoder: a coarse map from the deepest features guides every level on the way up.

Each stage embeds the saliency estimate of the stage below into its features (the paper's
saliency-guidance feature embedding): the lateral features are re-weighted by the upsampled
saliency probability and fused with the upsampled decoder features. Every stage emits a side
output for deep supervision; the top stage (stride 4) gives the final map.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .layers import ConvBNAct


class GuidedFusion(nn.Module):
    """One decoder stage: lateral features, guided by the saliency below, fused with the decoder below."""

    def __init__(self, lateral_channels: int, channels: int) -> None:
        super().__init__()
        self.lateral = ConvBNAct(lateral_channels, channels, kernel_size=1, activation=nn.ReLU)
        self.fuse = nn.Sequential(
            ConvBNAct(3 * channels, channels, kernel_size=1, activation=nn.ReLU),
            ConvBNAct(channels, channels, kernel_size=3, groups=channels, activation=nn.ReLU),
            ConvBNAct(channels, channels, kernel_size=1, activation=nn.ReLU),
        )
        self.side = nn.Conv2d(channels, 1, 3, padding=1)

    def forward(self, lateral: Tensor, below: Tensor, below_logits: Tensor) -> tuple[Tensor, Tensor]:
        size = lateral.shape[-2:]
        lateral = self.lateral(lateral)
        below = F.interpolate(below, size=size, mode="bilinear", align_corners=False)
        guidance = torch.sigmoid(F.interpolate(below_logits, size=size, mode="bilinear", align_corners=False))
        fused = self.fuse(torch.cat([lateral, lateral * guidance, below], dim=1))
        return fused, self.side(fused)


class SaliencyGuidedDecoder(nn.Module):
    def __init__(self, encoder_channels: tuple[int, ...], deep_channels: int, channels: int = 32) -> None:
        super().__init__()
        self.coarse_head = nn.Sequential(
            ConvBNAct(deep_channels, channels, kernel_size=3, activation=nn.ReLU),
            nn.Conv2d(channels, 1, 1),
        )
        self.deep_lateral = ConvBNAct(deep_channels, channels, kernel_size=1, activation=nn.ReLU)
        # Stages for strides 16, 8 and 4 (encoder levels 2, 1, 0), deepest first.
        self.stages = nn.ModuleList(GuidedFusion(c, channels) for c in reversed(encoder_channels[:3]))

    def forward(self, levels: list[Tensor], deep: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Return (stride-4 saliency-guided features, coarse logits at stride 32, side logits deepest first).

        The last side output is the stride-4 map the student upsamples to the input size.
        """
        coarse = self.coarse_head(deep)
        features, logits = self.deep_lateral(deep), coarse
        side_logits: list[Tensor] = []
        for stage, lateral in zip(self.stages, reversed(levels[:3]), strict=True):
            features, logits = stage(lateral, features, logits)
            side_logits.append(logits)
        return features, coarse, side_logits
