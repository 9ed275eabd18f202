"""Lightweight spatial encoder: MobileNetV2 inverted residuals with a width multiplier.

The module tree mirrors torchvision's `mobilenet_v2().features` (minus the final 1x1 conv to 1280
channels), so `load_pretrained` accepts a torchvision ImageNet checkpoint from a local file.
Nothing is ever downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from .layers import ConvBNAct, make_divisible

# (expansion t, channels c, repeats n, first stride s): the MobileNetV2 paper's Table 2.
INVERTED_RESIDUAL_SETTING: list[tuple[int, int, int, int]] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]

# Index into `features` after which each pyramid level (stride 4, 8, 16, 32) is complete.
_LEVEL_ENDS = (3, 6, 13, 17)

# The ImageNet statistics that the encoder's pretrained weights expect their inputs normalised by.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageNetNormalise(nn.Module):
    """RGB in [0, 1] -> what the encoder expects. The statistics are buffers, so they follow the
    network to its device, and not persistent, so no state dict holds them."""

    mean: Tensor
    std: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, frames: Tensor) -> Tensor:
        return (frames - self.mean) / self.std


class InvertedResidual(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(in_channels * expand_ratio))
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(in_channels, hidden, kernel_size=1))
        layers += [
            ConvBNAct(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2Encoder(nn.Module):
    """Returns four feature maps at strides 4, 8, 16 and 32."""

    def __init__(self, width_mult: float = 1.0) -> None:
        super().__init__()
        in_channels = make_divisible(32 * width_mult)
        features: list[nn.Module] = [ConvBNAct(3, in_channels, stride=2)]
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            out_channels = make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(in_channels, out_channels, s if i == 0 else 1, t))
                in_channels = out_channels
        self.features = nn.Sequential(*features)
        self.out_channels: tuple[int, ...] = tuple(
            make_divisible(c * width_mult) for c in (24, 32, 96, 320)
        )

    def forward(self, x: Tensor, fine_cue: Tensor | None = None) -> list[Tensor]:
        """`fine_cue`, when given, is added to the stride-4 features before the deeper stages see them
        (the motion branch's evidence reaches every level that way)."""
        levels: list[Tensor] = []
        start = 0
        for end in _LEVEL_ENDS:
            for index in range(start, end + 1):
                x = self.features[index](x)
            if fine_cue is not None and not levels:
                x = x + fine_cue
            levels.append(x)
            start = end + 1
        return levels

    def load_pretrained(self, path: str | Path) -> None:
        """Load ImageNet weights from a local torchvision-style checkpoint (.pth/.pt or .safetensors).

        Keys outside `features.0`..`features.17` (the 1280-channel head, the classifier) are ignored;
        a missing or mis-shaped encoder key is an error, so a wrong width multiplier cannot load silently.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"pretrained encoder weights not found: {path}")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
            state = loaded["state_dict"] if isinstance(loaded, dict) and "state_dict" in loaded else loaded
        own = self.state_dict()
        picked = {}
        for key, value in state.items():
            key = key.removeprefix("module.").removeprefix("encoder.")
            if key in own:
                if own[key].shape != value.shape:
                    raise ValueError(
                        f"pretrained weight {key} has shape {tuple(value.shape)}, the encoder expects "
                        f"{tuple(own[key].shape)}: was it made for another width multiplier?"
                    )
                picked[key] = value
        missing = [k for k in own if k not in picked and not k.endswith("num_batches_tracked")]
        if missing:
            raise ValueError(f"pretrained file {path} lacks {len(missing)} encoder weights, e.g. {missing[0]}")
        self.load_state_dict(picked, strict=False)
