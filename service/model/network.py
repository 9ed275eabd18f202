"""What vsod trains and stores: a network with a config and a forward pass over whole clips.

The student is one, and so are the training-only teachers (`distill.teachers`). A trainer needs
nothing else of the network it trains: the config is saved beside the weights (a checkpoint's
`model_config`, a manifest's `config`) so that the same network can be built again, and
`forward_clip` runs a B,T,3,H,W clip in one pass.
"""

from __future__ import annotations

from typing import Any, Protocol

from torch import Tensor, nn


class NetworkConfig(Protocol):
    """A network's shape: what its builder needs, as plain JSON values."""

    def to_dict(self) -> dict[str, Any]: ...


class ClipNetwork(nn.Module):
    """A plain `nn.Module` whose subclasses set `config` and define `forward_clip`."""

    config: NetworkConfig

    def forward_clip(self, clip: Tensor) -> Any:
        """clip: B,T,3,H,W; the outputs of every frame, flattened to B*T rows, time-major in each clip."""
        raise NotImplementedError
