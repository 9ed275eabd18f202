"""Detail refiner: the decoder's stride-4 map corrected at stride 2 from the frame itself.

The decoder decides where the object is on a stride-4 grid: 72x72 cells at 288x288, too coarse for
thin parts and for the outlines of small objects such as vtest.avi's walkers. `bench/resolution_cap.py`
measures what that grid alone costs: the teacher's own maps, decided on it, no longer score perfectly
against themselves (bench/RESULTS.md). The refiner looks at the frame at stride 2 beside the upsampled
map and computes a correction to the map's logits: a few channels on the finest grid, where a convolution
costs the most per channel. Its last convolution starts at zero, so a model that gains a refiner
(`--refiner-channels`) starts exactly as the model it came from.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .layers import ConvBNAct


class DetailRefiner(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.frame = ConvBNAct(3, channels, kernel_size=3, stride=2, activation=nn.ReLU)
        self.fuse = ConvBNAct(channels + 1, channels, kernel_size=3, activation=nn.ReLU)
        self.correction = nn.Conv2d(channels, 1, 3, padding=1)

    def zero_correction(self) -> None:
        """Start as the identity: the refined map is the upsampled stride-4 map until training moves it."""
        nn.init.zeros_(self.correction.weight)
        if self.correction.bias is not None:
            nn.init.zeros_(self.correction.bias)

    def forward(self, frames: Tensor, logits: Tensor) -> tuple[Tensor, Tensor]:
        """frames: B,3,H,W as the encoder sees them (normalised); logits: B,1 at stride 4. Returns the
        logits brought to stride 2 and the correction to add to them, both B,1 at stride 2. They come
        apart so the student can also add each, upsampled, at the input size: a zero correction then
        changes nothing at all."""
        features = self.frame(frames)
        upsampled = F.interpolate(logits, size=features.shape[-2:], mode="bilinear", align_corners=False)
        return upsampled, self.correction(self.fuse(torch.cat([features, upsampled], dim=1)))
