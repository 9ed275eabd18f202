"""Motion evidence at stride 8: the current frame's fine features compared with the previous frame's.

    stride-8 features ─▶ squeeze (C=4) ─┬──────────────────────────────▶ pack (pixel-unshuffle ×4) ─▶ state
                                        └─▶ [current, previous, |current − previous|] ─▶ compare ─▶ cue
    state ─▶ unpack (pixel-shuffle ×4) ─▶ previous ─┘

The co-attention of `interframe` sees the previous frame at stride 32, 11×11 tokens at 352×352:
too coarse to notice an object that differs from its background only by moving. This module keeps a
few channels of the previous frame's stride-8 features and lets the decoder compare them with the
current frame's, which is motion evidence without flow and without a recurrent cell (the previous
features are an input, never this module's own output). Packed by pixel-unshuffle onto the stride-32
grid, they travel in the same state tensor as the co-attention's, so a stream still carries one
tensor and the exported step keeps its inputs and outputs.

The cue is added to the stride-8 encoder features that the decoder reads. Its last convolution
starts at zero, so a model that gains this branch starts out exactly as the model it came from.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .layers import ConvBNAct

PACK = 4  # stride 32 / stride 8: each stride-32 cell carries a 4x4 block of stride-8 positions


class MotionEncoder(nn.Module):
    def __init__(self, in_channels: int, channels: int = 4) -> None:
        super().__init__()
        self.channels = channels
        self.squeeze = ConvBNAct(in_channels, channels, kernel_size=1, activation=nn.ReLU)
        self.compare = ConvBNAct(3 * channels, in_channels, kernel_size=3, activation=nn.ReLU)
        self.cue = nn.Conv2d(in_channels, in_channels, 1)

    @property
    def state_channels(self) -> int:
        return self.channels * PACK * PACK

    def zero_cue(self) -> None:
        """Start with no cue at all (see the module docstring); called after the model's weight init."""
        nn.init.zeros_(self.cue.weight)
        if self.cue.bias is not None:
            nn.init.zeros_(self.cue.bias)

    def pack(self, squeezed: Tensor, grid: tuple[int, int]) -> Tensor:
        """Stride-8 channels onto the (h, w) stride-32 grid; the stride-8 map is padded to 4h x 4w."""
        height, width = grid
        padded = F.pad(squeezed, (0, PACK * width - squeezed.shape[-1], 0, PACK * height - squeezed.shape[-2]))
        return F.pixel_unshuffle(padded, PACK)

    def unpack(self, packed: Tensor, size: tuple[int, int]) -> Tensor:
        """The inverse of `pack`, cropped to the stride-8 map's (H, W)."""
        return F.pixel_shuffle(packed, PACK)[..., : size[0], : size[1]]

    def forward(self, fine: Tensor, previous: Tensor | None, grid: tuple[int, int],
                fresh: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Return (cue to add to the stride-8 features, this frame's packed state part).

        `previous` is the previous frame's packed part, or None for a stream's first frame, which
        pairs with itself (no motion); `fresh` (B bools) does the same for single rows of a batch.
        """
        current = self.squeeze(fine)
        earlier = current if previous is None else self.unpack(previous, (current.shape[-2], current.shape[-1]))
        if previous is not None and fresh is not None:
            earlier = torch.where(fresh.view(-1, 1, 1, 1), current, earlier)
        return self.compared(current, earlier), self.pack(current, grid)

    def compared(self, current: Tensor, earlier: Tensor) -> Tensor:
        """The cue from two frames' squeezed stride-8 features."""
        return self.cue(self.compare(torch.cat([current, earlier, (current - earlier).abs()], dim=1)))
