"""A live session's slot in the engine: backpressure (latest frame wins) and ordered control.

The WebSocket reader offers frames and asks for resets and the close without ever waiting; the
sender awaits `next_event`, so masks, reset acknowledgements and the close go out in the order the
client asked for them. At most one frame waits per session: a newer one replaces it and is counted
as dropped, so nothing buffers without bound. The frame after the one in flight is handed to the
engine as soon as a mask comes back (a pipeline of two per session).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .sessions import CacheUnavailable

if TYPE_CHECKING:
    from .engine import Engine, FrameResult


@dataclass
class StreamReset:
    frame: int = 0


@dataclass
class StreamClosing:
    pass


class StreamHandle:
    """One live session's slot: at most one waiting frame (latest wins) plus reset/close requests.

    The connection's reader calls `offer`/`request_reset`/`request_close` and never waits; its
    sender loops on `next_event`, so masks, reset acknowledgements and the close go out in the
    order the client asked for them.
    """

    def __init__(self, engine: Engine, session_id: str, next_frame: int = 0, dropped: int = 0, temporal: bool = True) -> None:
        self.engine, self.session_id = engine, session_id
        self.next_frame, self.dropped = next_frame, dropped
        self.temporal = temporal  # False while the session store is unavailable to this stream
        self._waiting: tuple[np.ndarray, float, float] | None = None  # frame, arrival, decode ms
        self._reset = self._close = False
        self._wake = asyncio.Event()
        self._ahead: asyncio.Future[FrameResult] | None = None  # the next frame, already with the engine

    def offer(self, frame: np.ndarray, received: float | None = None) -> bool:
        """Queue a frame; True when it replaced an older waiting one (which counts as dropped)."""
        replaced = self._drop_waiting()
        now = time.perf_counter()
        self._waiting = (frame, received or now, (now - received) * 1000 if received else 0.0)
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
            if self._ahead is not None:  # sent before any reset or close still pending: answered first
                ahead, self._ahead = self._ahead, None
                return self._advance(await ahead)
            if self._reset:
                self._reset = False
                try:
                    await self.engine.reset(self.session_id)
                except CacheUnavailable:  # the old state may survive the outage: never resume it
                    self.temporal = False
                self.next_frame = 0
                return StreamReset()
            if self._waiting is not None:
                return self._advance(await self._step_waiting())
            if self._close:
                return StreamClosing()
            self._wake.clear()
            await self._wake.wait()

    def _step_waiting(self) -> Coroutine[Any, Any, FrameResult]:
        """The waiting frame's engine step, its arguments taken now (the coroutine may start later)."""
        assert self._waiting is not None
        frame, received, decode_ms = self._waiting
        self._waiting = None
        return self.engine.step(self.session_id, frame, received, self.dropped, self.next_frame,
                                after_outage=not self.temporal, decode_ms=decode_ms)

    def _advance(self, result: FrameResult) -> FrameResult:
        """Book the result, then hand a frame that is already waiting to the engine right away, so
        the engine runs it while this mask is encoded and sent (a pipeline of two per session)."""
        self.next_frame, self.temporal = result.frame + 1, result.temporal
        if self._waiting is not None and not self._reset:
            self._ahead = asyncio.ensure_future(self._step_waiting())
            self._ahead.add_done_callback(_retrieve)
        return result


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a look-ahead step's failure as seen: next_event re-raises it, unless the stream is gone."""
    if not future.cancelled():
        future.exception()
