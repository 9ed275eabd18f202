"""The spatial teacher: a heavier per-frame saliency network than the student.

    frame ─▶ MobileNetV2 x1.4 ─┬─ strides 4, 8, 16 ────────────────────────┐
                               └─ stride 32 ─▶ pyramid pooling ─▶ deep ──▶ TeacherDecoder (3x3 convs, 64 ch)
                                                                            ─▶ coarse, sides, final

It sees one frame at a time: everything it knows is appearance. Width 1.4 and a decoder of full 3x3
convolutions make it about 8x the student's FLOPs at 352x352 (measured by `model_flops` in
`distill.teachers.inference`, checked by the tests); a local torchvision MobileNetV2 checkpoint can
initialise the encoder at width 1.0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from service.model.encoder import ImageNetNormalise, MobileNetV2Encoder
from service.model.layers import init_weights
from service.model.network import ClipNetwork

from .blocks import PyramidPooling, TeacherDecoder, TeacherOutput


@dataclass
class SpatialTeacherConfig:
    width_mult: float = 1.4
    channels: int = 64

    def to_dict(self) -> dict[str, Any]:
        return {"width_mult": self.width_mult, "channels": self.channels}


class SpatialTeacher(ClipNetwork):
    kind = "spatial-teacher"
    config: SpatialTeacherConfig

    def __init__(self, config: SpatialTeacherConfig | None = None) -> None:
        super().__init__()
        self.config = config or SpatialTeacherConfig()
        self.normalise = ImageNetNormalise()
        self.encoder = MobileNetV2Encoder(self.config.width_mult)
        channels = self.encoder.out_channels
        self.context = PyramidPooling(channels[3], self.config.channels)
        self.decoder = TeacherDecoder(channels, self.config.channels)
        init_weights(self)

    @property
    def feature_channels(self) -> int:
        """Channels of both `spatial_features` and `deep_features`."""
        return self.config.channels

    def encode(self, frames: Tensor) -> tuple[list[Tensor], Tensor]:
        """(pyramid levels at strides 4..32, stride-32 context features) of N,3,H,W frames in [0, 1]."""
        levels = self.encoder(self.normalise(frames))
        return levels, self.context(levels[3])

    def forward(self, frames: Tensor) -> TeacherOutput:
        levels, deep = self.encode(frames)
        return self.decoder(levels, deep, frames.shape[-2:])

    def forward_clip(self, clip: Tensor) -> TeacherOutput:
        """clip: B,T,3,H,W; every frame on its own, outputs flattened to B*T rows like the student's."""
        return self.forward(clip.flatten(0, 1))
