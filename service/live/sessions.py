"""`LiveSessions`: the one owner of live sessions' temporal state, as the API and the engine see it.

- For the stream route: `connect` (the resume policy at connect time, and the session's slot),
  `prepare_frame` (bytes -> a frame for the model); for the sessions resource `get` / `expires_in`
  / `delete`; for readiness `ping` and `backend`.
- For the engine, as its `StateIO`: `load` a batch's contexts in one round trip (the same resume
  policy, per frame), `save` them in one, `forget` one on reset.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..engine import Engine
from ..engine_types import Context, FrameRequest, Loaded
from ..limits import FrameRate, LimitExceeded
from ..metrics import Metrics
from ..video import decode_for_model
from .policy import ResumePolicy
from .slot import StreamSlot
from .state import SessionState
from .store import SessionStore, StoreUnavailable


@dataclass(frozen=True)
class Connected:
    """What a connecting client is told (the protocol's SessionHello) and the slot its frames go to."""

    slot: StreamSlot
    frame: int
    dropped: int
    temporal: bool
    restarted: str | None


class LiveSessions:
    def __init__(self, store: SessionStore, model_id: str, input_size: tuple[int, int], metrics: Metrics,
                 scaled_jpeg_decode: bool = False, max_side: int = 4096, pixels_per_s: float = 0.0) -> None:
        self.store, self.metrics = store, metrics
        self.model_id, self.input_size = model_id, (int(input_size[0]), int(input_size[1]))
        self.policy = ResumePolicy(model_id, self.input_size)
        self.scaled_jpeg_decode, self.max_side, self.pixels_per_s = scaled_jpeg_decode, max_side, pixels_per_s

    # -- the stream route ----------------------------------------------------------------------------
    async def connect(self, session: str, engine: Engine) -> Connected:
        """Open a slot for `session` (the store's id), continuing its stored state where the policy allows."""
        try:
            stored = await self.store.get(session)
        except StoreUnavailable:  # the stream starts anyway, without temporal context until the store is back
            return Connected(self._slot(engine, session, 0, 0, False), 0, 0, False, None)
        resumed = self.policy.at_connect(stored, time.time())
        temporal = True
        if resumed.refused:  # another model or input size: never misread it, start over
            self.metrics.state_restarts.inc()
            try:
                await self.store.delete(session)
            except StoreUnavailable:
                temporal = False
        state = resumed.state
        return Connected(self._slot(engine, session, state.frame, state.dropped, temporal), state.frame,
                         state.dropped, temporal, resumed.restarted)

    def _slot(self, engine: Engine, session: str, frame: int, dropped: int, temporal: bool) -> StreamSlot:
        budget = FrameRate(self.pixels_per_s) if self.pixels_per_s > 0 else None
        return StreamSlot(engine, session, self.prepare_frame, frame, dropped, temporal, budget)

    def prepare_frame(self, data: bytes, header_size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
        """Frame bytes -> (the frame decoded and resized for the model, the frame's own (height, width)).
        VideoError when they do not decode; LimitExceeded when the decoded frame is over the side limit."""
        frame, size = decode_for_model(data, self.input_size, header_size, self.scaled_jpeg_decode)
        if max(size) > self.max_side:
            raise LimitExceeded(f"the frame is {size[1]}x{size[0]}; the limit is {self.max_side} a side")
        return frame, size

    async def get(self, session: str) -> SessionState | None:
        """The stored state, without extending its TTL."""
        return await self.store.get(session, refresh=False)

    async def expires_in(self, session: str) -> float | None:
        return await self.store.expires_in(session)

    async def delete(self, session: str) -> bool:
        return await self.store.delete(session)

    @property
    def backend(self) -> str:
        """Where states are kept: "redis" or "memory"."""
        return self.store.backend

    async def ping(self) -> None:
        """Raise when the store cannot be reached (readiness)."""
        await self.store.ping()

    # -- the engine's StateIO --------------------------------------------------------------------------
    async def load(self, requests: Sequence[FrameRequest]) -> tuple[list[Loaded], bool]:
        if not requests:
            return [], True
        try:
            found, available = await self.store.get_many([r.session for r in requests]), True
        except StoreUnavailable:  # the frames still run, without temporal context
            found, available = [None] * len(requests), False
        now = time.time()
        loaded = []
        for request, stored in zip(requests, found, strict=True):
            resumed = self.policy.for_frame(stored, request.expected, request.after_outage, available, now)
            if resumed.refused:
                self.metrics.state_restarts.inc()
            state = resumed.state
            loaded.append(Loaded(Context(state.carried, state.frame, state.created), resumed.restarted))
        return loaded, available

    async def save(self, requests: Sequence[FrameRequest], contexts: Sequence[Context]) -> bool:
        now = time.time()
        states = [(request.session, SessionState(self.model_id, self.input_size, context.frame, context.carried,
                                                 context.created, now, request.dropped))
                  for request, context in zip(requests, contexts, strict=True)]
        try:
            await self.store.put_many(states)
        except StoreUnavailable:  # these masks are good; the next frames start without context
            return False
        return True

    async def forget(self, session: str) -> None:
        await self.store.delete(session)
