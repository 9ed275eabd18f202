"""The engine's vocabulary: what goes in (a stream's frame), what comes out (a mask), and the small
interface through which it loads and saves stream contexts without knowing how they are stored."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

import numpy as np

from .model.processing import probability_to_mask


@dataclass(frozen=True)
class Context:
    """A stream's temporal context between two frames: what the model carries, the next frame's
    index, and when the session began (wall clock)."""

    carried: dict[str, np.ndarray]  # empty: the next frame starts a fresh context
    frame: int
    created: float


@dataclass(frozen=True)
class FrameRequest:
    """One frame of a live stream, ready for the model."""

    session: str  # the store's id of the session
    frame: np.ndarray  # uint8 RGB, already resized to the model's input (`Predictor.prepare`)
    size: tuple[int, int]  # the mask's (height, width): the frame's own
    expected: int  # the frame index the client's view of the session expects next
    dropped: int = 0  # frames of the session dropped so far
    after_outage: bool = False  # the session's previous frame could not use the store
    received: float = 0.0  # perf_counter() at arrival
    decode_ms: float = 0.0
    context: Context | None = None  # the previous frame's context while its write-back is pending


@dataclass(frozen=True)
class Loaded:
    """The context a frame runs with, and why it restarted, if it did."""

    context: Context
    restarted: str | None = None


class StateIO(Protocol):
    """How the engine reads and writes stream contexts: one round trip per batch each way."""

    async def load(self, requests: Sequence[FrameRequest]) -> tuple[list[Loaded], bool]:
        """Each request's context (in order), and False when the store could not be read."""

    async def save(self, requests: Sequence[FrameRequest], contexts: Sequence[Context]) -> bool:
        """Store each request's new context; False when the store could not be written."""

    async def forget(self, session: str) -> None:
        """Delete the session's stored context."""


@dataclass
class FrameResult:
    probability: np.ndarray  # float32 h x w at the model's output size
    size: tuple[int, int]  # the mask's (height, width): the frame's own
    frame: int  # this frame's index in its session
    latency_ms: float  # arrival to mask
    dropped: int = 0  # frames of the session dropped so far
    restarted: str | None = None  # why the temporal context restarted at this frame, if it did
    temporal: bool = True  # False: the session store could not be read or written for this frame
    # Where the time went, ms: decode, wait (queue + batch window), state_get, model, state_put; and
    # batch (frames in its forward pass). Streams send it with the mask (bench/stream.py reads it).
    timings: dict[str, float] = field(default_factory=dict)

    @cached_property
    def mask(self) -> np.ndarray:
        """uint8 HxW at the frame's size. Made on first use, on the thread that asks (the stream's
        encoder), so the model's thread does not pay the resize for every frame of every batch."""
        return probability_to_mask(self.probability, self.size)


@dataclass
class StepTicket:
    """A submitted stream frame: `computed` resolves when the model has run (the session's new
    context), `result` once that context is stored and the mask may go out."""

    computed: asyncio.Future[Context]
    result: asyncio.Future[FrameResult]


class EngineClosed(RuntimeError):
    """The engine is shutting down and takes no more work."""


def retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a future's failure as seen (someone else re-raises it), so asyncio does not log it."""
    if not future.cancelled():
        future.exception()
