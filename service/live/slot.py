"""A live session's slot in front of the engine: backpressure (latest frame wins) and ordered control.

The WebSocket reader offers frames (still encoded) and asks for resets and the close without ever
waiting; the sender awaits `next_event`, so masks, reset acknowledgements and the close go out in
the order the client asked for them. At most one frame waits per session: a newer one replaces it
and is counted as dropped, so nothing buffers without bound.

A frame costs nothing until it is due: it waits as the bytes that came in, and is decoded (on a
worker thread) only when it goes to the engine, so a frame that a newer one replaces is never
decoded. Decoding is also bounded in pixels per second (`decode_budget`): a due frame over the
budget waits until the budget allows it (meanwhile newer frames replace the one behind it), so a
stream of large frames is slowed to the budget, never left without an answer.

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
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..engine import Engine
from ..engine_types import Context, FrameRequest, FrameResult, StepTicket, retrieve
from ..limits import FrameRate, LimitExceeded
from ..video import VideoError
from .store import StoreUnavailable

# bytes and the header's (height, width) -> (the frame resized for the model, the frame's (height, width))
Prepare = Callable[[bytes, tuple[int, int]], tuple[np.ndarray, tuple[int, int]]]


@dataclass
class StreamReset:
    frame: int = 0


@dataclass
class StreamClosing:
    pass


@dataclass
class FrameRefused:
    """A due frame that could not be decoded (the client gets an error; the session goes on)."""

    code: str
    message: str


@dataclass
class _Encoded:
    data: bytes
    size: tuple[int, int]  # (height, width) from the header
    received: float


@dataclass
class _InFlight:
    """A frame on its way: decoding, then with the engine (`ticket`)."""

    task: asyncio.Task[StepTicket]
    ticket: StepTicket | None = None


class StreamSlot:
    """One live session's slot: at most one waiting frame (latest wins) plus reset/close requests."""

    def __init__(self, engine: Engine, session_id: str, prepare: Prepare, next_frame: int = 0, dropped: int = 0,
                 temporal: bool = True, decode_budget: FrameRate | None = None) -> None:
        self.engine, self.session_id, self.prepare = engine, session_id, prepare
        self.next_frame, self.dropped = next_frame, dropped
        self.temporal = temporal  # False while the session store is unavailable to this stream
        self.decode_budget = decode_budget  # pixels a second this stream may have decoded
        self._waiting: _Encoded | None = None
        self._reset = self._close = False
        self._wake = asyncio.Event()
        self._inflight: deque[_InFlight] = deque()  # oldest first (at most two)

    def offer(self, data: bytes, size: tuple[int, int], received: float | None = None) -> bool:
        """Queue an encoded frame (`size`: its header's (height, width)); True when it replaced an
        older waiting one, which is dropped undecoded."""
        replaced = self._drop_waiting()
        self._waiting = _Encoded(data, size, received or time.perf_counter())
        if not self._inflight and not self._reset:
            self._submit_waiting(None)  # due at once: nothing of this stream is with the engine
        else:
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
        """A frame of this stream that will not be processed (replaced, or over a rate limit)."""
        self.dropped += 1
        self.engine.metrics.dropped_frames.inc()

    async def next_event(self) -> FrameResult | StreamReset | StreamClosing | FrameRefused:
        while True:
            if self._inflight:  # sent before any reset or close still pending: answered first
                entry = self._inflight[0]
                try:
                    ticket = await entry.task
                    result = await ticket.result
                except (VideoError, LimitExceeded) as error:
                    return FrameRefused(getattr(error, "code", "bad_frame"), str(error))
                finally:  # popped only now, so the frame behind it can chain onto it meanwhile
                    if self._inflight and self._inflight[0] is entry:
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
        """Decode the waiting frame and hand it to the engine: with the previous frame's context while
        that one's save is pending, else to load the session's state from the store."""
        assert self._waiting is not None
        encoded, self._waiting = self._waiting, None
        expected = context.frame if context is not None else self.next_frame
        task = asyncio.get_running_loop().create_task(self._decode_and_submit(encoded, expected, context))
        task.add_done_callback(retrieve)  # a frame that fails to decode after its stream closed is not an error to log
        self._inflight.append(_InFlight(task))

    async def _decode_and_submit(self, encoded: _Encoded, expected: int, context: Context | None) -> StepTicket:
        height, width = encoded.size
        if self.decode_budget is not None and (wait := self.decode_budget.reserve(height * width)) > 0:
            await asyncio.sleep(wait)
        started = time.perf_counter()
        frame, size = await asyncio.to_thread(self.prepare, encoded.data, encoded.size)
        ticket = self.engine.submit_step(FrameRequest(
            self.session_id, frame, size, expected, self.dropped, after_outage=not self.temporal,
            received=encoded.received, decode_ms=(time.perf_counter() - started) * 1000, context=context))
        for entry in self._inflight:
            if entry.task is asyncio.current_task():
                entry.ticket = ticket
        ticket.computed.add_done_callback(lambda _: self._chain())
        return ticket

    def _chain(self) -> None:
        """Pipeline the waiting frame behind the newest in-flight one once the model has run it."""
        if self._waiting is None or self._reset or len(self._inflight) != 1:
            return
        newest = self._inflight[-1].ticket
        if newest is not None and newest.computed.done() and not newest.computed.cancelled() \
                and newest.computed.exception() is None and not newest.result.done():
            self._submit_waiting(newest.computed.result())
