"""The temporal teacher: the spatial teacher's network plus a bidirectional ConvGRU over a window.

    window of W frames ─▶ spatial teacher encoder + context (per frame) ─▶ deep_1 .. deep_W
        forward ConvGRU  deep_1 → deep_W ─┐
        backward ConvGRU deep_W → deep_1 ─┴─▶ merge ─(+ deep_t)─▶ temporal_t ─▶ TeacherDecoder ─▶ maps_t

Every frame's maps depend on all W frames of its window (W >= 3: the frames before *and after*),
through a sequential recurrent module: exactly the kind of model the student avoids (it sees only
the previous frame, through one co-attention). The merge's last batch norm starts at zero, so a
temporal teacher initialised from a trained spatial teacher starts out equal to it and learns only
what the window adds.

At inference a sequence is read through sliding windows centred on each frame (clamped at the ends,
as the training clips are): each frame is encoded once, the ConvGRUs run over its window, and the
decoder runs once per frame. That per-frame cost is what `teacher_ms_per_frame` times.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from service.model.layers import ConvBNAct

from .blocks import ConvGRUCell, TeacherOutput, init_weights
from .spatial import SpatialTeacher, SpatialTeacherConfig


@dataclass
class TemporalTeacherConfig:
    width_mult: float = 1.4
    channels: int = 64
    hidden: int = 64  # ConvGRU state channels per direction
    bidirectional: bool = True
    window: int = 3  # frames per window at inference: the training clip length

    def to_dict(self) -> dict[str, Any]:
        return {"width_mult": self.width_mult, "channels": self.channels, "hidden": self.hidden,
                "bidirectional": self.bidirectional, "window": self.window}


class TemporalTeacher(nn.Module):
    kind = "temporal-teacher"

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
        self.merge = nn.Sequential(
            ConvBNAct(channels + directions * hidden, channels, kernel_size=3, activation=nn.ReLU),
            ConvBNAct(channels, channels, kernel_size=1, activation=None),
        )
        init_weights(self.forward_gru)
        init_weights(self.merge)
        if self.backward_gru is not None:
            init_weights(self.backward_gru)
        nn.init.zeros_(self.merge[-1][1].weight)  # residual branch starts at zero (see the module docstring)

    @property
    def feature_channels(self) -> int:
        return self.config.channels

    def temporal(self, deep: Tensor) -> Tensor:
        """B,T,C,h,w context features of a window -> B,T,C,h,w temporal features."""
        steps = deep.shape[1]
        forward_states: list[Tensor] = []
        state = None
        for t in range(steps):
            state = self.forward_gru(deep[:, t], state)
            forward_states.append(state)
        states = [forward_states]
        if self.backward_gru is not None:
            backward_states: list[Tensor] = [deep.new_empty(0)] * steps
            state = None
            for t in reversed(range(steps)):
                state = self.backward_gru(deep[:, t], state)
                backward_states[t] = state
            states.append(backward_states)
        merged = [
            deep[:, t] + self.merge(torch.cat([deep[:, t], *(direction[t] for direction in states)], dim=1))
            for t in range(steps)
        ]
        return torch.stack(merged, dim=1)

    def forward_clip(self, clip: Tensor) -> TeacherOutput:
        """clip: B,T,3,H,W (one window per clip); outputs flattened to B*T rows, time-major per clip."""
        batch, steps = clip.shape[:2]
        levels, deep = self.spatial.encode(clip.flatten(0, 1))
        temporal = self.temporal(deep.unflatten(0, (batch, steps))).flatten(0, 1)
        return self.spatial.decoder(levels, temporal, clip.shape[-2:])

    def forward(self, clip: Tensor) -> TeacherOutput:
        return self.forward_clip(clip)

    @torch.no_grad()
    def stream(self, frames: Iterable[Tensor]) -> Iterator[Tensor]:
        """Logits (1,1,H,W) for 1,3,H,W frames in order, each from the window centred on it.

        The window of frame t starts at clamp(t - W//2, 0, T - W); a frame is emitted as soon as its
        window is complete (or the sequence has ended), and encoded frames are dropped once no
        later window needs them, so memory holds one window whatever the sequence length.
        """
        window = self.config.window
        half = window // 2
        cache: dict[int, tuple[list[Tensor], Tensor]] = {}
        size = None
        count, emitted = 0, 0

        def emit(t: int, total: int | None) -> Tensor:
            start = max(t - half, 0)
            if total is not None:
                start = max(0, min(start, total - window))
            span = range(start, min(start + window, count))
            deep = torch.stack([cache[i][1] for i in span], dim=1)
            temporal = self.temporal(deep)[:, t - start]
            levels = cache[t][0]
            for index in [i for i in cache if i < start]:
                del cache[index]
            return self.spatial.decoder(levels, temporal, size).logits

        for frame in frames:
            size = frame.shape[-2:]
            cache[count] = self.spatial.encode(frame)
            count += 1
            # Frame t's window is complete once frame max(t - half, 0) + W - 1 has arrived.
            while emitted < count and max(emitted - half, 0) + window - 1 < count:
                yield emit(emitted, None)
                emitted += 1
        while emitted < count:
            yield emit(emitted, count)
            emitted += 1
