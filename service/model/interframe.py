"""Inter-frame feature encoding: the current frame's deep features attend to the previous frame's.

A co-attention (as in COSNet) over the stride-32 tokens of two frames replaces optical flow and
recurrent cells: the affinity between every current and previous position lets the current frame
borrow the previous frame's evidence where the object moved to. Nothing here is sequential: the
previous frame's *projected* deep features are an input, never this module's own earlier output,
so a whole clip can be encoded in one batch and a stream needs only one frame of state.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .layers import ConvBNAct


class InterFrameEncoder(nn.Module):
    def __init__(self, in_channels: int, channels: int = 64) -> None:
        super().__init__()
        self.channels = channels
        # Projected deep features: what a stream keeps for the next frame (its state).
        self.project = ConvBNAct(in_channels, channels, kernel_size=1, activation=nn.ReLU)
        self.query = nn.Conv2d(channels, channels, 1, bias=False)
        self.key = nn.Conv2d(channels, channels, 1, bias=False)
        self.gate = nn.Sequential(nn.Conv2d(channels, 1, 1), nn.Sigmoid())
        self.fuse = ConvBNAct(2 * channels, channels, kernel_size=3, activation=nn.ReLU)

    def forward(
        self, deep: Tensor, previous: Tensor | None, fresh: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Return (temporal features, projected current features to keep as the next frame's state).

        `previous` is the projected deep tensor of the previous frame, or None for a stream's first
        frame, which pairs with itself; `fresh` (B bools) does the same for single rows of a batch.
        """
        current = self.project(deep)
        if previous is None:
            previous = current
        elif fresh is not None:
            previous = torch.where(fresh.view(-1, 1, 1, 1), current, previous)
        return self.attend(current, previous), current

    def attend(self, current: Tensor, previous: Tensor) -> Tensor:
        """The temporal features from two frames' projected deep features."""
        batch, channels, height, width = current.shape
        query = self.query(current).flatten(2).transpose(1, 2)  # B, N, C
        key = self.key(previous).flatten(2)  # B, C, N
        value = previous.flatten(2).transpose(1, 2)  # B, N, C
        affinity = torch.bmm(query, key) / math.sqrt(channels)  # B, N_current, N_previous
        attended = torch.bmm(F.softmax(affinity, dim=-1), value)
        attended = attended.transpose(1, 2).reshape(batch, channels, height, width)
        # The gate lets the model ignore the previous frame where the match is poor (cuts, occlusion).
        attended = attended * self.gate(attended)
        return self.fuse(torch.cat([current, attended], dim=1))
