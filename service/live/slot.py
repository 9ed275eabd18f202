"""A live session's slot in front of the engine: backpressure (latest frame wins) and ordered control.

The WebSocket reader offers frames and asks for resets and the close without ever waiting; the
sender awaits `next_event`, so masks, reset acknowledgements and the close go out in the order the
client asked for them. At most one frame waits per session: a newer one replaces it and is counted
as dropped, so nothing buffers without bound.

Pipeline: at most two frames of a session are with the engine. A waiting frame is handed over as
soon as the model has run the one before it (`StepTicket.computed`), together with that frame's
new state, so the model runs it while the previous state is written back and its mask is encoded
and sent. The stream's temporal state thus travels explicitly: store -> engine -> here -> engine,
and the store always holds the state of every mask that went out.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from ..engine import Engine
from ..engine_types import Context, FrameRequest, FrameResult, StepTicket
from .store import StoreUnavailable


@dataclass
class StreamReset:
    frame: int = 0


@dataclass
class StreamClosing:
    pass


class StreamSlot:
    """One live session's slot: at most one waiting frame (latest wins) plus reset/close requests.

    The connection's reader calls `offer`/`request_reset`/`request_close` and never waits; its
    sender loops on `next_event`, so masks, reset acknowledgements and the close go out in the
    order the client asked for them.
    """

    def __init__(self, engine: Engine, session_id: str, next_frame: int = 0, dropped: int = 0, temporal: bool = True) -> None:
        self.engine, self.session_id = engine, session_id
        self.next_frame, self.dropped = next_frame, dropped
        self.temporal = temporal  # False while the session store is unavailable to this stream
        self._waiting: tuple[np.ndarray, float, float, tuple[int, int]] | None = None  # frame (prepared for
        # the model), arrival, decode ms, and the mask's size (the frame's own)
        self._reset = self._close = False
        self._wake = asyncio.Event()
        self._inflight: deque[StepTicket] = deque()  # with the engine, oldest first (at most two)

    def offer(self, frame: np.ndarray, size: tuple[int, int], received: float | None = None) -> bool:
        """Queue a frame prepared for the model (its mask comes at `size`); True when it replaced an
        older waiting one (which counts as dropped)."""
        replaced = self._drop_waiting()
        now = time.perf_counter()
        self._waiting = (frame, received or now, (now - received) * 1000 if received else 0.0, size)
        self._chain()
        self._wake.set()
        return replaced

    def request_reset(self) -> None:
        self._drop_waiting()  # sent before the reset: the client has asked for a fresh context
        self._reset = True
        self._wake.set()

    def request_close(self) -> None:
        self._close = True
        self._wake.set()

    def _drop_waiting(self) -> bool:
        if self._waiting is None:
            return False
        self._waiting = None
        self.count_dropped()
        return True

    def count_dropped(self) -> None:
        """A frame of this stream that will not be processed (replaced, or over the frame-rate limit)."""
        self.dropped += 1
        self.engine.metrics.dropped_frames.inc()

    async def next_event(self) -> FrameResult | StreamReset | StreamClosing:
        while True:
            if self._inflight:  # sent before any reset or close still pending: answered first
                ticket = self._inflight[0]
                try:
                    result = await ticket.result
                finally:  # popped only now, so the frame behind it can chain onto it meanwhile
                    if self._inflight and self._inflight[0] is ticket:
                        self._inflight.popleft()
                self.next_frame, self.temporal = result.frame + 1, result.temporal
                if self._waiting is not None and not self._reset and not self._inflight:
                    self._submit_waiting(None)  # runs while this mask is encoded and sent
                self._chain()
                return result
            if self._reset:
                self._reset = False
                try:
                    await self.engine.reset(self.session_id)
                except StoreUnavailable:  # the old state may survive the outage: never resume it
                    self.temporal = False
                self.next_frame = 0
                return StreamReset()
            if self._waiting is not None:
                self._submit_waiting(None)
                continue
            if self._close:
                return StreamClosing()
            self._wake.clear()
            await self._wake.wait()

    def _submit_waiting(self, context: Context | None) -> None:
        """Hand the waiting frame to the engine: with the previous frame's context while that one's
        save is pending, else to load the session's state from the store."""
        assert self._waiting is not None
        frame, received, decode_ms, size = self._waiting
        self._waiting = None
        expected = context.frame if context is not None else self.next_frame
        ticket = self.engine.submit_step(FrameRequest(
            self.session_id, frame, size, expected, self.dropped, after_outage=not self.temporal, received=received,
            decode_ms=decode_ms, context=context))
        ticket.computed.add_done_callback(lambda _: self._chain())
        self._inflight.append(ticket)

    def _chain(self) -> None:
        """Pipeline the waiting frame behind the newest in-flight one once the model has run it."""
        if self._waiting is None or self._reset or len(self._inflight) != 1:
            return
        newest = self._inflight[-1]
        if newest.computed.done() and not newest.computed.cancelled() and newest.computed.exception() is None \
                and not newest.result.done():
            self._submit_waiting(newest.computed.result())
