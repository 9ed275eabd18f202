"""The STKD student: encoder -> inter-frame encoding -> saliency-guided decoder.

    frame t ─┬──────────────────▶ MotionEncoder ◀─ reference   (the motion branch, if any)
             │                          │ cue
             │                          ▼
             └─▶ MobileNetV2: stride 4 (+) ─▶ 8 ─▶ 16 ─▶ 32
                      │ strides 4, 8, 16              │ stride 32
                      │                               ▼
                      │                 InterFrameEncoder ◀─ previous
                      ▼                               │ temporal
                 SaliencyGuidedDecoder ◀──────────────┘
                      └─▶ coarse, sides ─▶ DetailRefiner (if any: stride 2, sees the frame) ─▶ final

At inference the only thing carried between frames is one tensor (`StudentOutput.state`): the
previous frame's projected stride-32 features, followed along the channels, when the model has a
motion branch (`motion_channels` > 0), by its reference (a moving average of the earlier frames'
stride-4 grey images) packed onto the same grid.
`forward_clip` encodes a whole clip in one batch and pairs each frame with its predecessor, which
gives the same result as stepping frame by frame.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from .decoder import SaliencyGuidedDecoder
from .encoder import ImageNetNormalise, MobileNetV2Encoder
from .interframe import InterFrameEncoder
from .layers import init_weights
from .motion import RADIUS, MotionEncoder
from .network import ClipNetwork
from .refiner import DetailRefiner

ARCHITECTURE = "stkd-student"



@dataclass
class StudentOutput:
    """Everything one forward pass produces; the intermediates feed the distillation losses."""

    logits: Tensor  # B,1,H,W at input resolution
    side_logits: list[Tensor]  # deep supervision, strides 16, 8, 4 (and 2 with a refiner); the last is the final map
    coarse_logits: Tensor  # stride 32, from the temporal deep features
    spatial_features: Tensor  # stride-4 saliency-guided decoder features
    temporal_features: Tensor  # stride-32 inter-frame encoded features
    state: Tensor  # projected stride-32 features: the next frame's `previous`


@dataclass
class StudentConfig:
    width_mult: float = 0.5
    temporal_channels: int = 64
    decoder_channels: int = 32
    motion_channels: int = 0  # channels that compare the motion branch's matching costs; 0: no branch
    motion_radius: int = RADIUS  # the branch's shifts: up to this many stride-4 cells each way
    refiner_channels: int = 0  # channels of the stride-2 detail refiner; 0: none, the final map is the stride-4 one

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudentConfig:
        """The config a manifest or a checkpoint records. ValueError names a key this version does not
        know (a model made by a newer vsod) or a value of the wrong kind, where the network would
        otherwise fail deep inside its construction."""
        defaults = cls()
        unknown = sorted(set(data) - {field.name for field in fields(cls)})
        if unknown:
            raise ValueError(f"the config has keys this vsod does not know ({', '.join(unknown)}): "
                             "made by a newer version?")
        for key, value in data.items():
            real = isinstance(getattr(defaults, key), float)
            if isinstance(value, bool) or not isinstance(value, (int, float) if real else int) or value < 0:
                raise ValueError(f"the config's {key} is {value!r}, not a {'number' if real else 'whole number'} >= 0")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        config = {"width_mult": self.width_mult, "temporal_channels": self.temporal_channels,
                  "decoder_channels": self.decoder_channels, "motion_channels": self.motion_channels}
        if self.motion_radius != RADIUS:  # absent in the manifests of versions 4 to 7, which use RADIUS
            config["motion_radius"] = self.motion_radius
        if self.refiner_channels:  # absent where there is none, as in every manifest before it existed
            config["refiner_channels"] = self.refiner_channels
        return config


class STKDStudent(ClipNetwork):
    config: StudentConfig

    def __init__(self, config: StudentConfig | None = None) -> None:
        super().__init__()
        self.config = config or StudentConfig()
        self.normalise = ImageNetNormalise()  # inside the network, so callers pass RGB in [0, 1]
        self.encoder = MobileNetV2Encoder(self.config.width_mult)
        channels = self.encoder.out_channels
        self.interframe = InterFrameEncoder(channels[3], self.config.temporal_channels)
        self.decoder = SaliencyGuidedDecoder(channels, self.config.temporal_channels, self.config.decoder_channels)
        motion = self.config.motion_channels
        self.motion = MotionEncoder(channels[0], motion, self.config.motion_radius) if motion else None
        refiner = self.config.refiner_channels
        self.refiner = DetailRefiner(refiner) if refiner else None
        init_weights(self)
        if self.motion is not None:
            self.motion.zero_cue()
        if self.refiner is not None:
            self.refiner.zero_correction()

    def state_shape(self, input_size: tuple[int, int]) -> tuple[int, int, int]:
        """Shape (C, h, w) of one frame's state for an input of (height, width)."""
        motion = self.motion.state_channels if self.motion is not None else 0
        return (self.config.temporal_channels + motion, *self.grid(input_size))

    @staticmethod
    def grid(input_size: tuple[int, int] | torch.Size) -> tuple[int, int]:
        """(h, w) of the stride-32 features, where the state lives, for an input of (height, width)."""
        height, width = input_size[0], input_size[1]
        for _ in range(5):  # five stride-2 stages; each rounds up like a padded 3x3 conv
            height, width = (height + 1) // 2, (width + 1) // 2
        return height, width

    def forward(self, frames: Tensor, previous: Tensor | None = None, fresh: Tensor | None = None) -> StudentOutput:
        """frames: B,3,H,W RGB in [0, 1]; previous: the last frames' `state` (None: all first frames).

        `fresh` (B bools) marks rows of a mixed batch whose stream is at its first frame: those pair
        with themselves, whatever their row of `previous` holds.
        """
        previous_deep, previous_reference = self._split_state(previous)
        cue, reference = None, None
        if self.motion is not None:
            cue, reference = self.motion(frames, previous_reference, self.grid(frames.shape[-2:]), fresh)
        normalised = self.normalise(frames)
        levels = self.encoder(normalised, cue)
        temporal, state = self.interframe(levels[3], previous_deep, fresh)
        if reference is not None:
            state = torch.cat([state, reference], dim=1)
        return self._decode(normalised, levels, temporal, state)

    def forward_clip(self, clip: Tensor, previous: Tensor | None = None) -> StudentOutput:
        """clip: B,T,3,H,W; outputs are flattened to B*T, time-major within each clip.

        Frame t pairs with frame t-1; the first frame pairs with `previous` (B,C,h,w: the state
        carried in from an earlier chunk of the same stream) or, when None, with itself, exactly as
        a stream does. So one batched pass equals stepping through the clip frame by frame.
        """
        batch, time = clip.shape[:2]
        frames = clip.flatten(0, 1)
        previous_deep, previous_reference = self._split_state(previous)
        cue, reference = None, None
        if self.motion is not None:
            cue, reference = self.motion.forward_clip(clip, previous_reference, self.grid(frames.shape[-2:]))
        normalised = self.normalise(frames)
        levels = self.encoder(normalised, cue)
        state = self.interframe.project(levels[3])
        temporal = self.interframe.attend(state, _with_predecessors(state.unflatten(0, (batch, time)), previous_deep))
        if reference is not None:
            state = torch.cat([state, reference], dim=1)
        return self._decode(normalised, levels, temporal, state)


    def _split_state(self, state: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
        """(the co-attention's part, the motion branch's reference) of a state tensor."""
        if state is None or self.motion is None:
            return state, None
        channels = self.config.temporal_channels
        return state[:, :channels], state[:, channels:]

    def _decode(self, frames: Tensor, levels: list[Tensor], temporal: Tensor, state: Tensor) -> StudentOutput:
        """frames: the normalised input, which the refiner (if any) sees beside the stride-4 map."""
        spatial, coarse, sides = self.decoder(levels, temporal)
        size = frames.shape[-2:]
        logits = F.interpolate(sides[-1], size=size, mode="bilinear", align_corners=False)
        if self.refiner is not None:
            upsampled, correction = self.refiner(frames, sides[-1])
            sides = [*sides, upsampled + correction]
            logits = logits + F.interpolate(correction, size=size, mode="bilinear", align_corners=False)
        return StudentOutput(logits, sides, coarse, spatial, temporal, state)


def _with_predecessors(current: Tensor, previous: Tensor | None) -> Tensor:
    """B,T,... per-frame tensors -> B*T rows, each frame's predecessor's: frame 0 takes `previous`
    (B,...: carried in from an earlier chunk) or, when None, itself, as a stream's first frame does."""
    first = current[:, :1] if previous is None else previous.unsqueeze(1)
    return torch.cat([first, current[:, :-1]], dim=1).flatten(0, 1)


def stkd_student(
    width_mult: float = 0.5,
    temporal_channels: int = 64,
    decoder_channels: int = 32,
    pretrained_encoder: str | None = None,
    motion_channels: int = 0,
    motion_radius: int = RADIUS,
    refiner_channels: int = 0,
) -> STKDStudent:
    """Build the student; `pretrained_encoder` is a local torchvision-style MobileNetV2 checkpoint."""
    model = STKDStudent(StudentConfig(width_mult, temporal_channels, decoder_channels, motion_channels, motion_radius,
                                      refiner_channels))
    if pretrained_encoder:
        model.encoder.load_pretrained(pretrained_encoder)
    return model
