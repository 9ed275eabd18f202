"""Motion evidence at stride 4: each frame matched against a moving average of the earlier frames.

    frame ─▶ grey, stride 4 ─┬─▶ match (7×7 shifts) against the reference ─▶ compare ─▶ cue
                             └─▶ (1 − w)·reference + w·grey ─▶ pack (pixel-unshuffle ×8) ─▶ state
    state ─▶ unpack ─▶ reference ─┘

The co-attention of `interframe` sees the previous frame at stride 32: too coarse for an object that
differs from its background only by moving. Such an object moves a pixel or two per frame, under a
moving camera, and one frame apart that barely shows: on motion-only clips, neither stride-8 features
nor the stride-4 grey image of the previous frame tell it from its background well, while the grey
image matched against a moving average of the earlier frames does (bench/motion_evidence.py, figures
in bench/RESULTS.md "Motion evidence"): the average reaches a few frames back, and it is still one
frame of state. Packed by pixel-unshuffle onto the stride-32 grid, it travels in the same state tensor
as the co-attention's, so a stream still carries one tensor and the exported step keeps its inputs
and outputs.

Matching is no flow field: per shift, a cost (the squared difference over a 3×3 window); the camera's
shift is the one that fits the whole frame best. The comparison sees each shift's cost relative to the
camera's and how much better the best local shift fits than the camera's. Nothing before the costs is
learnt: the average is fixed arithmetic, the same in a three-frame training clip as in an endless
stream, where it reaches further back.

The cue is added to the encoder's stride-4 features before its deeper stages run, so that the evidence
reaches every level, the coarse map and the co-attention included, and not only the decoder's last,
most local stage (whose map the coarse one guides). Its last convolution starts at zero, so a model
that gains this branch starts out exactly as the model it came from.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .layers import ConvBNAct

STRIDE = 4  # the grey image's stride: the encoder's finest level
PACK = 8  # stride 32 / stride 4: each stride-32 cell carries an 8x8 block of the reference
RADIUS = 3  # shifts of up to 3 stride-4 cells each way (12 pixels): more than these objects move per frame
AVERAGE_WEIGHT = 0.25  # the newest frame's weight in the reference (bench/motion_evidence.py: 0.25 beat 0.5)
# How sharply the soft minimum picks the camera's shift: a shift whose cost over the frame is 1% above
# the best one's gets 1/e of its weight. Sharper picked no better (bench/motion_evidence.py).
CAMERA_SHARPNESS = 100.0


class MotionEncoder(nn.Module):
    def __init__(self, out_channels: int, channels: int = 8, radius: int = RADIUS,
                 weight: float = AVERAGE_WEIGHT) -> None:
        super().__init__()
        self.channels, self.radius, self.weight = channels, radius, weight
        shifts = (2 * radius + 1) ** 2
        self.compare = ConvBNAct(shifts + 1, channels, kernel_size=3, activation=nn.ReLU)
        self.cue = nn.Conv2d(channels, out_channels, 1)

    @property
    def state_channels(self) -> int:
        return PACK * PACK

    def zero_cue(self) -> None:
        """Start with no cue at all (see the module docstring); called after the model's weight init."""
        nn.init.zeros_(self.cue.weight)
        if self.cue.bias is not None:
            nn.init.zeros_(self.cue.bias)

    def forward(self, frames: Tensor, previous: Tensor | None, grid: tuple[int, int],
                fresh: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Return (cue to add to the encoder's stride-4 features, this frame's packed state part).

        `frames` are B,3,H,W RGB in [0, 1]. `previous` is the previous frame's packed part, or None
        for a stream's first frame, which is its own reference (no motion); `fresh` (B bools) does the
        same for single rows of a batch.
        """
        grey = self.grey(frames)
        reference = grey if previous is None else self.unpack(previous, grey.shape[-2:])
        if previous is not None and fresh is not None:
            reference = torch.where(fresh.view(-1, 1, 1, 1), grey, reference)
        return self.compared(grey, reference), self.pack(self.averaged(reference, grey), grid)

    def forward_clip(self, clip: Tensor, previous: Tensor | None, grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """`forward` over B,T,3,H,W clips in one pass: cues and state parts flattened to B*T rows.

        The average runs through the clip frame by frame, but on grey stride-4 images only: the
        matching and the comparison, which are the work, run once over the whole batch.
        """
        batch, time = clip.shape[:2]
        grey = self.grey(clip.flatten(0, 1)).unflatten(0, (batch, time))
        reference = grey[:, 0] if previous is None else self.unpack(previous, grey.shape[-2:])
        references, averages = [], []
        for t in range(time):
            references.append(reference)
            reference = self.averaged(reference, grey[:, t])
            averages.append(reference)
        cue = self.compared(grey.flatten(0, 1), torch.stack(references, 1).flatten(0, 1))
        return cue, self.pack(torch.stack(averages, 1).flatten(0, 1), grid)

    @staticmethod
    def grey(frames: Tensor) -> Tensor:
        """B,1,H/4,W/4 brightness in units of the frame's own contrast, so that a change of exposure is
        no motion; sizes round up like the encoder's padded strided convolutions."""
        grey = F.avg_pool2d(frames.mean(1, keepdim=True), STRIDE, ceil_mode=True)
        mean = grey.mean((2, 3), keepdim=True)
        return (grey - mean) / (((grey - mean) ** 2).mean((2, 3), keepdim=True).sqrt() + 1e-3)

    def averaged(self, reference: Tensor, grey: Tensor) -> Tensor:
        return (1 - self.weight) * reference + self.weight * grey

    def compared(self, grey: Tensor, reference: Tensor) -> Tensor:
        """The cue from a frame's grey image and its reference."""
        return self.cue(self.compare(self.evidence(grey, reference)))

    def evidence(self, grey: Tensor, reference: Tensor) -> Tensor:
        """B,1+(2R+1)^2,h,w: how much better the best local shift fits each cell than the camera's
        shift, then each shift's cost relative to the camera's."""
        costs = self.shift_costs(grey, reference)
        # The camera's shift fits the whole frame best. A soft minimum over the shifts, not an argmin:
        # two shifts that fit almost equally (a camera moving half a cell) must not flip the evidence
        # on a rounding difference between backends.
        frame_costs = costs.mean((2, 3))
        sharpness = CAMERA_SHARPNESS / (frame_costs.mean(1, keepdim=True) + 1e-8)
        weights = torch.softmax(-frame_costs * sharpness, dim=1)
        camera = (costs * weights[..., None, None]).sum(1, keepdim=True)
        relative = costs - camera  # below zero where a local shift fits better than the camera's
        gain = camera - costs.amin(1, keepdim=True)
        return torch.cat([gain, relative], dim=1)

    def shift_costs(self, grey: Tensor, reference: Tensor) -> Tensor:
        """B,(2R+1)^2,h,w: squared differences of `grey` and `reference` moved by each shift, averaged
        over a 3x3 window (one cell alone matches too easily)."""
        height, width = grey.shape[-2:]
        size = 2 * self.radius + 1
        padded = F.pad(reference, (self.radius,) * 4, mode="replicate")
        costs = torch.cat([(grey - padded[..., dy : dy + height, dx : dx + width]) ** 2
                           for dy in range(size) for dx in range(size)], dim=1)
        return F.avg_pool2d(costs, 3, stride=1, padding=1, count_include_pad=False)

    @staticmethod
    def evidence_channels(radius: int, within: int) -> list[int]:
        """The channels of `evidence` at radius `radius` that a branch of radius `within` <= `radius`
        also computes: the gain, then the shifts of up to `within` cells, in its order. A branch's
        comparison can be narrowed to a smaller radius by keeping these input channels."""
        if not 0 < within <= radius:
            raise ValueError(f"a motion radius of {within} cannot be taken from one of {radius}")
        size, offset = 2 * radius + 1, radius - within
        return [0] + [1 + (offset + dy) * size + offset + dx
                      for dy in range(2 * within + 1) for dx in range(2 * within + 1)]

    def pack(self, reference: Tensor, grid: tuple[int, int]) -> Tensor:
        """The stride-4 reference onto the (h, w) stride-32 grid; it is padded to 8h x 8w."""
        height, width = grid
        padded = F.pad(reference, (0, PACK * width - reference.shape[-1], 0, PACK * height - reference.shape[-2]))
        return F.pixel_unshuffle(padded, PACK)

    def unpack(self, packed: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
        """The inverse of `pack`, cropped to the stride-4 image's (H, W)."""
        return F.pixel_shuffle(packed, PACK)[..., : size[0], : size[1]]
