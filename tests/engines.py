"""An engine with its live-session owner in this process, for tests that drive the engine directly."""

from __future__ import annotations

import time

import numpy as np

from service.engine import Engine
from service.engine_types import FrameRequest, FrameResult
from service.live import LiveSessions, MemorySessionStore, SessionStore, StreamSlot
from service.metrics import Metrics
from service.model import Predictor
from tests.servers import png


def memory_engine(predictor: Predictor, store: SessionStore | None = None, batch_size: int = 1,
                  batch_wait_ms: float = 0.0) -> Engine:
    """An engine whose sessions live in `store` (a fresh in-memory one by default)."""
    metrics = Metrics()
    live = LiveSessions(store if store is not None else MemorySessionStore(60), predictor.model_id,
                        predictor.input_size, metrics)
    return Engine(predictor, live, metrics, batch_size, batch_wait_ms)


async def step(engine: Engine, session: str, frame: np.ndarray, expected: int = 0) -> FrameResult:
    """The session's next frame: its state is loaded from the store, advanced and saved."""
    request = FrameRequest(session, engine.predictor.prepare(frame), frame.shape[:2], expected,
                           received=time.perf_counter())
    return await engine.submit_step(request).result


def slot(engine: Engine, session: str) -> StreamSlot:
    """A stream's slot, decoding its frames as the server does (the engine's LiveSessions)."""
    return StreamSlot(engine, session, engine.state_io.prepare_frame)  # type: ignore[attr-defined]


def offer(stream: StreamSlot, frame: np.ndarray) -> bool:
    """Offer a frame as the stream route does: encoded (PNG, lossless), with its header's size."""
    return stream.offer(png(frame), frame.shape[:2])
