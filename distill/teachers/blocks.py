"""Building blocks of the teachers: context pooling, a heavy saliency-guided decoder, a ConvGRU.

The teachers decode like the student (a coarse map guides every finer level, side outputs at
strides 16, 8 and 4) but with full 3x3 convolutions and more channels, so their stride-4 features
are the same kind of saliency-guided features as the student's, only richer: that is what makes
them a target the student's features can mimic through a 1x1 adapter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from service.model.layers import ConvBNAct


@dataclass
class TeacherOutput:
    """A teacher's maps and features; field names match `StudentOutput` where they mean the same."""

    logits: Tensor  # N,1,H,W at input resolution
    side_logits: list[Tensor]  # strides 16, 8, 4 (the last is `logits` before upsampling)
    coarse_logits: Tensor  # stride 32
    spatial_features: Tensor  # stride-4 saliency-guided decoder features
    deep_features: Tensor  # stride-32 context features the decoder starts from
    temporal_features: Tensor | None = None  # temporal teacher: its stride-8 features after the ConvGRUs


@dataclass
class DecoderHead:
    """The decoder's state at stride 8, where the temporal teacher's ConvGRUs step in."""

    features: Tensor  # stride-8 features
    coarse: Tensor  # stride-32 logits
    side16: Tensor  # stride-16 logits
    deep: Tensor  # stride-32 context features


class PyramidPooling(nn.Module):
    """PSPNet-style context at stride 32: global and regional averages joined to the local features."""

    def __init__(self, in_channels: int, channels: int, bins: tuple[int, ...] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.reduce = ConvBNAct(in_channels, channels, kernel_size=1, activation=nn.ReLU)
        branch = max(8, channels // len(bins))
        self.bins = bins
        self.branches = nn.ModuleList(ConvBNAct(channels, branch, kernel_size=1, activation=nn.ReLU) for _ in bins)
        self.fuse = ConvBNAct(channels + branch * len(bins), channels, kernel_size=3, activation=nn.ReLU)

    def forward(self, x: Tensor) -> Tensor:
        x = self.reduce(x)
        size = x.shape[-2:]
        pooled = [
            F.interpolate(branch(F.adaptive_avg_pool2d(x, bin_)), size=size, mode="bilinear", align_corners=False)
            for bin_, branch in zip(self.bins, self.branches, strict=True)
        ]
        return self.fuse(torch.cat([x, *pooled], dim=1))


class HeavyGuidedFusion(nn.Module):
    """One decoder stage: lateral features re-weighted by the saliency below, then two full 3x3 convs."""

    def __init__(self, lateral_channels: int, channels: int) -> None:
        super().__init__()
        self.lateral = ConvBNAct(lateral_channels, channels, kernel_size=1, activation=nn.ReLU)
        self.fuse = nn.Sequential(
            ConvBNAct(3 * channels, channels, kernel_size=1, activation=nn.ReLU),
            ConvBNAct(channels, channels, kernel_size=3, activation=nn.ReLU),
            ConvBNAct(channels, channels, kernel_size=3, activation=nn.ReLU),
        )
        self.side = nn.Conv2d(channels, 1, 3, padding=1)

    def forward(self, lateral: Tensor, below: Tensor, below_logits: Tensor) -> Tensor:
        """The fused features; `side` turns them into this stage's logits (apart, so the temporal
        teacher can refine the features in between)."""
        size = lateral.shape[-2:]
        lateral = self.lateral(lateral)
        below = F.interpolate(below, size=size, mode="bilinear", align_corners=False)
        guidance = torch.sigmoid(F.interpolate(below_logits, size=size, mode="bilinear", align_corners=False))
        return self.fuse(torch.cat([lateral, lateral * guidance, below], dim=1))


class TeacherDecoder(nn.Module):
    """Coarse map from the deep features, then guided fusion at strides 16, 8 and 4.

    Split in two at stride 8 (`head`, `tail`): the temporal teacher runs its ConvGRUs there.
    """

    def __init__(self, encoder_channels: tuple[int, ...], channels: int) -> None:
        super().__init__()
        self.coarse_head = nn.Sequential(ConvBNAct(channels, channels, kernel_size=3, activation=nn.ReLU),
                                         nn.Conv2d(channels, 1, 1))
        # Stages for strides 16, 8 and 4 (encoder levels 2, 1, 0), deepest first.
        self.stages = nn.ModuleList(HeavyGuidedFusion(c, channels) for c in reversed(encoder_channels[:3]))

    def stage(self, index: int) -> HeavyGuidedFusion:
        """Stage `index` (0: stride 16, 1: stride 8, 2: stride 4), typed: a ModuleList item is any Module."""
        return cast(HeavyGuidedFusion, self.stages[index])

    def head(self, levels: list[Tensor], deep: Tensor) -> DecoderHead:
        coarse = self.coarse_head(deep)
        features16 = self.stage(0)(levels[2], deep, coarse)
        side16 = self.stage(0).side(features16)
        return DecoderHead(self.stage(1)(levels[1], features16, side16), coarse, side16, deep)

    def tail(self, level4: Tensor, head: DecoderHead, size: tuple[int, int] | torch.Size,
             temporal: Tensor | None = None) -> TeacherOutput:
        """From stride-8 features (`temporal`: refined ones replacing `head.features`) to the final map."""
        features8 = head.features if temporal is None else temporal
        side8 = self.stage(1).side(features8)
        features4 = self.stage(2)(level4, features8, side8)
        side4 = self.stage(2).side(features4)
        final = F.interpolate(side4, size=tuple(size), mode="bilinear", align_corners=False)
        return TeacherOutput(final, [head.side16, side8, side4], head.coarse, features4, head.deep, temporal)

    def forward(self, levels: list[Tensor], deep: Tensor, size: tuple[int, int] | torch.Size) -> TeacherOutput:
        return self.tail(levels[0], self.head(levels, deep), size)


class ConvGRUCell(nn.Module):
    """A convolutional GRU cell (Ballas et al. 2016): gates and candidate from 3x3 convolutions."""

    def __init__(self, in_channels: int, hidden: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.hidden = hidden
        padding = kernel_size // 2
        self.gates = nn.Conv2d(in_channels + hidden, 2 * hidden, kernel_size, padding=padding)
        self.candidate = nn.Conv2d(in_channels + hidden, hidden, kernel_size, padding=padding)

    def forward(self, x: Tensor, h: Tensor | None) -> Tensor:
        if h is None:
            h = x.new_zeros(x.shape[0], self.hidden, *x.shape[-2:])
        update, reset = torch.sigmoid(self.gates(torch.cat([x, h], dim=1))).chunk(2, dim=1)
        candidate = torch.tanh(self.candidate(torch.cat([x, reset * h], dim=1)))
        return (1 - update) * h + update * candidate

