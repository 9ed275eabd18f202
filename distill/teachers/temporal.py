"""The temporal teacher: the spatial teacher's network plus a bidirectional ConvGRU over a window.

    window of W frames ─▶ spatial teacher: encoder, context, decoder down to stride 8 (per frame)
        forward ConvGRU  f8_1 → f8_W ─┐
        backward ConvGRU f8_W → f8_1 ─┴─▶ merge ─(+ f8_t)─▶ temporal_t ─▶ decoder stride 4 ─▶ final_t

Every frame's final map depends on all W frames of its window (W >= 3: the frames before *and
after*) through a sequential recurrent module at stride 8, the resolution at which published VSOD
models run theirs (PDB-ConvLSTM: a bidirectional ConvLSTM on stride-8 dilated-ResNet features).
That is exactly the kind of module the student avoids (it sees only the previous frame, through one
co-attention at stride 32), and what makes this teacher slow: each frame pays 2W recurrent steps on
a stride-8 grid. The merge's last batch norm starts at zero, so a temporal teacher initialised from
a trained spatial teacher starts out equal to it and learns only what the window adds.

At inference a sequence is read through sliding windows centred on each frame (clamped at the ends,
as the training clips are): each frame is encoded and decoded to stride 8 once, the ConvGRUs run over
its window, and the stride-4 stage runs once per frame. That per-frame cost is what
`stream_ms_per_frame` times.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from service.model.layers import ConvBNAct, init_weights
from service.model.network import ClipNetwork

from .blocks import ConvGRUCell, DecoderHead, TeacherOutput
from .spatial import SpatialTeacher, SpatialTeacherConfig


@dataclass
class TemporalTeacherConfig:
    width_mult: float = 1.4
    channels: int = 64
    hidden: int = 128  # ConvGRU state channels per direction
    bidirectional: bool = True
    window: int = 3  # frames per window at inference: the training clip length

    def to_dict(self) -> dict[str, Any]:
        return {"width_mult": self.width_mult, "channels": self.channels, "hidden": self.hidden,
                "bidirectional": self.bidirectional, "window": self.window}


class TemporalTeacher(ClipNetwork):
    kind = "temporal-teacher"
    config: TemporalTeacherConfig

    def __init__(self, config: TemporalTeacherConfig | None = None) -> None:
        super().__init__()
        self.config = config or TemporalTeacherConfig()
        if self.config.window < 1:
            raise ValueError("the temporal teacher's window must hold at least one frame")
        channels, hidden = self.config.channels, self.config.hidden
        self.spatial = SpatialTeacher(SpatialTeacherConfig(self.config.width_mult, channels))
        self.forward_gru = ConvGRUCell(channels, hidden)
        self.backward_gru = ConvGRUCell(channels, hidden) if self.config.bidirectional else None
        directions = 2 if self.config.bidirectional else 1
        residual = ConvBNAct(channels, channels, kernel_size=1, activation=None)
        self.merge = nn.Sequential(
            ConvBNAct(channels + directions * hidden, channels, kernel_size=3, activation=nn.ReLU),
            residual,
        )
        init_weights(self.forward_gru)
        init_weights(self.merge)
        if self.backward_gru is not None:
            init_weights(self.backward_gru)
        batch_norm = residual[1]
        assert isinstance(batch_norm, nn.BatchNorm2d)
        nn.init.zeros_(batch_norm.weight)  # residual branch starts at zero (see the module docstring)

    @property
    def feature_channels(self) -> int:
        """Channels of `temporal_features` (and of the spatial part's features)."""
        return self.config.channels

    def temporal(self, features: Tensor) -> Tensor:
        """B,T,C,h,w stride-8 features of a window -> B,T,C,h,w temporal features."""
        steps = features.shape[1]
        forward_states: list[Tensor] = []
        state = None
        for t in range(steps):
            state = self.forward_gru(features[:, t], state)
            forward_states.append(state)
        directions = [forward_states]
        if self.backward_gru is not None:
            backward_states: list[Tensor] = [features.new_empty(0)] * steps
            state = None
            for t in reversed(range(steps)):
                state = self.backward_gru(features[:, t], state)
                backward_states[t] = state
            directions.append(backward_states)
        merged = [
            features[:, t] + self.merge(torch.cat([features[:, t], *(d[t] for d in directions)], dim=1))
            for t in range(steps)
        ]
        return torch.stack(merged, dim=1)

    def _head(self, frames: Tensor) -> tuple[Tensor, DecoderHead]:
        """(stride-4 encoder level, decoder state at stride 8) of N,3,H,W frames."""
        levels, deep = self.spatial.encode(frames)
        return levels[0], self.spatial.decoder.head(levels, deep)

    def forward_clip(self, clip: Tensor) -> TeacherOutput:
        """clip: B,T,3,H,W (one window per clip); outputs flattened to B*T rows, time-major per clip."""
        batch, steps = clip.shape[:2]
        level4, head = self._head(clip.flatten(0, 1))
        temporal = self.temporal(head.features.unflatten(0, (batch, steps))).flatten(0, 1)
        return self.spatial.decoder.tail(level4, head, clip.shape[-2:], temporal)

    def forward(self, clip: Tensor) -> TeacherOutput:
        return self.forward_clip(clip)

    @torch.no_grad()
    def stream(self, frames: Iterable[Tensor]) -> Iterator[Tensor]:
        """Logits (N,1,H,W) for N,3,H,W frames in order, each from the window centred on it.

        The window of frame t starts at clamp(t - W//2, 0, T - W); a frame is emitted as soon as its
        window is complete (or the sequence has ended), and frames are dropped once no later window
        needs them, so memory holds one window whatever the sequence length.
        """
        window = self.config.window
        half = window // 2
        cache: dict[int, tuple[Tensor, DecoderHead]] = {}
        size: torch.Size | None = None
        count, emitted = 0, 0

        def emit(t: int, total: int | None) -> Tensor:
            start = max(t - half, 0)
            if total is not None:
                start = max(0, min(start, total - window))
            span = range(start, min(start + window, count))
            temporal = self.temporal(torch.stack([cache[i][1].features for i in span], dim=1))[:, t - start]
            level4, head = cache[t]
            for index in [i for i in cache if i < start]:
                del cache[index]
            assert size is not None  # set by the first frame, before anything is emitted
            return self.spatial.decoder.tail(level4, head, size, temporal).logits

        for frame in frames:
            size = frame.shape[-2:]
            cache[count] = self._head(frame)
            count += 1
            # Frame t's window is complete once frame max(t - half, 0) + W - 1 has arrived.
            while emitted < count and max(emitted - half, 0) + window - 1 < count:
                yield emit(emitted, None)
                emitted += 1
        while emitted < count:
            yield emit(emitted, count)
            emitted += 1
