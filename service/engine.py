"""The inference engine: one model per process, one inference thread, every request in FIFO order.

Streams, still images and clip jobs all submit operations to one queue. A single asyncio task
takes them in order; frames of different sessions run as one `Predictor.step_batch` (a micro-batch
of up to `batch_size`), with their states fetched from the session cache in one round trip and
written back in one. The model itself runs on a dedicated thread, so the event loop never blocks
and one model instance serves every session.

Micro-batching: the worker takes every frame already waiting (one per session), then waits up to
`batch_wait_ms` for the frames of other sessions that `BatchWindow` says are due (service/batch_window.py),
so sessions in lockstep with their masks share a pass. A lone stream never waits.

Backpressure for live streams lives in `service.streams.StreamHandle`: at most one frame waits per session, and
a newer frame replaces it (latest wins, counted as dropped), so nothing buffers without bound. A
frame that is already waiting when a mask comes out goes to the engine at once, while that mask
is encoded and sent: a client that keeps two frames in flight gets a pipeline, not a stall.

Pipelining: the worker does not wait for a batch's states to be written back. As soon as the
model returns, each stream learns its new state (`StepTicket.computed`) and the write-back runs
beside the next batch; the mask is released (`StepTicket.result`) once its state is stored, so a
mask never gets ahead of the state a reconnecting client would resume from. A stream's next frame
that is handed over while that write is still pending carries the computed state with it
(`context`) and skips the store read; any other frame reads the store after the pending writes of
its session have landed. Writes go to the store in batch order.

When the session cache is unavailable a stream's frames still run, each without temporal context
(`FrameResult.temporal` False) and with its frame numbering kept; the first frame that reaches the
cache again resumes the stored state if it is current, else starts a fresh context, and says so.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .batch_window import BatchWindow
from .metrics import Metrics
from .model import Predictor, StateError, StreamState
from .model.processing import probability_to_mask
from .sessions import CacheUnavailable, SessionCache, SessionRecord

if TYPE_CHECKING:
    from .streams import StreamHandle

EXPIRED = "the session's stored state expired or was deleted; its temporal context restarted at frame 0"
RECOVERED = "the session store was unavailable; temporal context restarted at this frame"


class EngineClosed(RuntimeError):
    """The engine is shutting down and takes no more work."""


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
        encoder): resizing to the frame's size costs ~0.5 ms at 768x576, which the model's thread
        would otherwise pay for every frame of every batch."""
        return probability_to_mask(self.probability, self.size)


@dataclass(frozen=True)
class StreamContext:
    """A stream's temporal context right after a frame, before (or while) it is written to the store."""

    state: StreamState
    created: float  # when the session was created (wall clock), kept in its record


@dataclass
class StepTicket:
    """A submitted stream frame: `computed` resolves when the model has run (the session's new
    context), `result` once that context is stored and the mask may go out."""

    computed: asyncio.Future[StreamContext]
    result: asyncio.Future[FrameResult]


@dataclass
class _Step:
    session_id: str
    frame: np.ndarray
    received: float
    dropped: int
    expected: int  # the frame index the client's view of the session expects next
    future: asyncio.Future[FrameResult] = field(repr=False)
    computed: asyncio.Future[StreamContext] = field(repr=False)
    after_outage: bool = False  # the session's previous frame could not use the store
    decode_ms: float = 0.0
    context: StreamContext | None = None  # the previous frame's context, when its write is still pending
    size: tuple[int, int] | None = None  # the mask's (height, width) when the frame was shrunk for the model
    submitted: float = field(default_factory=time.perf_counter)


@dataclass
class _Image:
    frame: np.ndarray
    received: float
    future: asyncio.Future[FrameResult] = field(repr=False)
    decode_ms: float = 0.0
    submitted: float = field(default_factory=time.perf_counter)


@dataclass
class _Reset:
    session_id: str
    future: asyncio.Future[None] = field(repr=False)


@dataclass
class _Clip:
    frames: list[np.ndarray]
    previous: Any  # the model's carried state between chunks (opaque here)
    future: asyncio.Future[tuple[list[np.ndarray], Any]] = field(repr=False)


_Op = _Step | _Image | _Reset | _Clip




class Engine:
    def __init__(
        self, predictor: Predictor, sessions: SessionCache, metrics: Metrics | None = None, batch_size: int = 1,
        batch_wait_ms: float = 0.0, executor: ThreadPoolExecutor | None = None,
    ) -> None:
        self.predictor, self.sessions, self.batch_size = predictor, sessions, batch_size
        self.batch_wait_s = batch_wait_ms / 1000
        self.metrics = metrics or Metrics()
        # One thread for every model call (the engine owns it, and shuts it down on close). Pass the
        # thread that loaded the model: see `inference_executor`.
        self._executor = executor or inference_executor()
        self._queue: asyncio.Queue[_Op] | None = None
        self._carry: deque[_Op] = deque()  # taken from the queue but not batchable with the last op
        self._arrived = asyncio.Event()  # set on every submission: the batch window waits on it
        self.window = BatchWindow(batch_size)  # which sessions a batch waits for
        self._task: asyncio.Task[None] | None = None
        self._storing: asyncio.Task[None] | None = None  # the latest batch's write-back (they run in order)
        self._unstored: dict[str, int] = {}  # session -> its batches whose write-back has not finished
        self.metrics.track_queue(lambda: self.queue_depth)

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._arrived = asyncio.Event()
        if self.predictor.runtime.mode != "eager":  # the optimised graph specialises per batch size
            await self._in_thread(self.predictor.runtime.warmup, range(1, self.batch_size + 1))
        self._task = asyncio.create_task(self._run(), name="vsod-engine")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._storing is not None:  # masks already computed: store their states and answer them
            await asyncio.gather(self._storing, return_exceptions=True)
        while op := self._next_nowait():
            if not op.future.done():
                op.future.set_exception(EngineClosed("the server is shutting down"))
        self._queue = None
        self._executor.shutdown(wait=True)

    @property
    def queue_depth(self) -> int:
        return (self._queue.qsize() if self._queue is not None else 0) + len(self._carry)

    @property
    def model_id(self) -> str:
        return self.predictor.model_id

    # -- submitting work ---------------------------------------------------------------------------
    def _submit(self, op: _Op) -> None:
        if self._queue is None:
            raise EngineClosed("the engine is not running")
        self._queue.put_nowait(op)
        if isinstance(op, _Step):
            self.window.arrived(op.session_id)
        self._arrived.set()

    async def predict_image(self, frame: np.ndarray) -> np.ndarray:
        """A still image: a one-frame stream with no stored state."""
        future: asyncio.Future[FrameResult] = asyncio.get_running_loop().create_future()
        self._submit(_Image(frame, time.perf_counter(), future))
        result = await future
        return await asyncio.to_thread(lambda: result.mask)

    def submit_step(
        self, session_id: str, frame: np.ndarray, received: float | None = None, dropped: int = 0, expected: int = 0,
        after_outage: bool = False, decode_ms: float = 0.0, context: StreamContext | None = None,
        size: tuple[int, int] | None = None,
    ) -> StepTicket:
        """Queue the session's next frame; its state comes from `context` when given, else from the cache.
        `size`: the mask's (height, width) when `frame` was already shrunk for the model."""
        loop = asyncio.get_running_loop()
        ticket = StepTicket(loop.create_future(), loop.create_future())
        ticket.computed.add_done_callback(retrieve)  # a failure is re-raised by `result`; seen once is enough
        self._submit(_Step(session_id, frame, received or time.perf_counter(), dropped, expected, ticket.result,
                           ticket.computed, after_outage, decode_ms, context, size))
        return ticket

    async def step(
        self, session_id: str, frame: np.ndarray, received: float | None = None, dropped: int = 0, expected: int = 0,
    ) -> FrameResult:
        """The session's next frame: its state is read from the cache, advanced and written back."""
        return await self.submit_step(session_id, frame, received, dropped, expected).result

    async def reset(self, session_id: str) -> None:
        """Forget the session's temporal context, in order after any of its frames already queued."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._submit(_Reset(session_id, future))
        await future

    async def clip_chunk(self, frames: list[np.ndarray], previous: Any = None) -> tuple[list[np.ndarray], Any]:
        """Consecutive frames of one clip in one forward pass; pass the returned state to the next chunk.

        Chunked exactly as `Predictor.predict_clip` chunks, so a clip job's masks equal the offline path.
        """
        future: asyncio.Future[tuple[list[np.ndarray], Any]] = asyncio.get_running_loop().create_future()
        self._submit(_Clip(frames, previous, future))
        return await future

    def open_stream(self, session_id: str, next_frame: int = 0, dropped: int = 0, temporal: bool = True) -> StreamHandle:
        from .streams import StreamHandle  # streams builds on this module; imported here to avoid a cycle

        return StreamHandle(self, session_id, next_frame, dropped, temporal)

    # -- the worker --------------------------------------------------------------------------------
    def _next_nowait(self) -> _Op | None:
        if self._carry:
            return self._carry.popleft()
        if self._queue is not None and not self._queue.empty():
            return self._queue.get_nowait()
        return None

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            op = self._next_nowait() or await self._queue.get()
            batch: list[_Op] = [op]
            try:
                if isinstance(op, (_Step, _Image)):
                    batch = await self._collect(op)
                if isinstance(op, _Reset):
                    await self._stored(op.session_id)  # a write still pending must not recreate it
                    await self.sessions.delete(op.session_id)
                    _resolve(op.future, None)
                elif isinstance(op, _Clip):
                    start = time.perf_counter()
                    out = await self._in_thread(self._infer_clip, op.frames, op.previous)
                    self._observe("clip", start, len(op.frames))
                    _resolve(op.future, out)
                else:
                    await self._run_frames(batch)  # type: ignore[arg-type]
            except asyncio.CancelledError:
                for pending in batch:
                    _fail(pending, EngineClosed("the server is shutting down"))
                raise
            except Exception as error:  # one bad batch must not stop the worker
                for failed in batch:
                    _fail(failed, error)

    async def _collect(self, first: _Step | _Image) -> list[_Op]:
        """Frames waiting now, one per session, up to batch_size, in order; then, within the batch
        window, the frames of other recently active sessions as they arrive."""
        batch: list[_Op] = [first]
        sessions = {first.session_id} if isinstance(first, _Step) else set()
        deadline = time.perf_counter() + self.batch_wait_s
        while len(batch) < self.batch_size:
            op = self._next_nowait()
            if op is None:
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or not self.window.worth_waiting(sessions, deadline):
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except asyncio.TimeoutError:
                    break
                except asyncio.CancelledError:  # shutting down: hand the frames back for close() to fail
                    self._carry.extendleft(reversed(batch[1:]))
                    raise
                continue
            if isinstance(op, _Image) or (isinstance(op, _Step) and op.session_id not in sessions):
                batch.append(op)
                if isinstance(op, _Step):
                    sessions.add(op.session_id)
            else:
                self._carry.appendleft(op)
                break
        return batch

    async def _run_frames(self, batch: Sequence[_Step | _Image]) -> None:
        """Read the states the frames do not carry, run the model, hand each stream its new context,
        and leave the write-back and the masks to `_store_and_answer`, beside the next batch."""
        started = time.perf_counter()
        steps = [op for op in batch if isinstance(op, _Step)]
        self.window.batched(op.session_id for op in steps)
        reads = [op.session_id for op in steps if op.context is None]
        for sid in reads:
            await self._stored(sid)  # read after this session's own pending write, never before it
        try:
            found, available = await self.sessions.get_many(reads), True
        except CacheUnavailable:  # the frames still run, without temporal context
            found, available = [None] * len(reads), False
        fetched = time.perf_counter()
        records = dict(zip(reads, found))
        now = time.time()
        states: list[StreamState | None] = []
        notes: list[str | None] = []
        created: list[float] = []
        for op in batch:
            state, note, born = None, None, now
            if isinstance(op, _Step) and op.context is not None:
                state, born = op.context.state, op.context.created
            elif isinstance(op, _Step):
                record = records[op.session_id]
                current = record is not None and record.frame == op.expected
                if not available or (op.after_outage and not current):
                    # A fresh context that keeps the client's frame numbering.
                    state = replace(self.predictor.new_state(), frame_index=op.expected)
                    note = RECOVERED if available else None
                    born = record.created if record is not None else now
                elif record is not None:
                    try:
                        state, born = self.predictor.load_state(record.state), record.created
                    except StateError as error:  # another model or size: refuse it, restart, and say so
                        note = f"stored state refused ({error}); temporal context restarted at frame 0"
                        self.metrics.state_restarts.inc()
                elif op.expected > 0:
                    note = EXPIRED
            states.append(state)
            notes.append(note)
            created.append(born)
        before_model = time.perf_counter()
        sizes = [(op.size if isinstance(op, _Step) else None) or op.frame.shape[:2] for op in batch]
        probabilities, new_states = await self._in_thread(self.predictor.infer_batch, [op.frame for op in batch], states)
        inferred = time.perf_counter()
        for op, new, born in zip(batch, new_states, created):
            if isinstance(op, _Step) and not op.computed.done():
                op.computed.set_result(StreamContext(new, born))
        timings = {"state_get": _ms(fetched - started), "model": _ms(inferred - before_model), "batch": len(batch)}
        for sid in {op.session_id for op in steps}:
            self._unstored[sid] = self._unstored.get(sid, 0) + 1
        self._storing = asyncio.create_task(self._store_and_answer(
            self._storing, batch, list(zip(probabilities, sizes)), new_states, notes, created, available, started,
            inferred, timings))

    async def _store_and_answer(
        self, previous: asyncio.Task[None] | None, batch: Sequence[_Step | _Image],
        outputs: list[tuple[np.ndarray, tuple[int, int]]],
        new_states: list[StreamState], notes: list[str | None], created: list[float], available: bool,
        started: float, inferred: float, timings: dict[str, float],
    ) -> None:
        """Write the batch's states back (after the previous batch's), then release its masks."""
        sessions = {op.session_id for op in batch if isinstance(op, _Step)}
        try:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            now = time.time()
            writes = [SessionRecord(op.session_id, new.to_bytes(), new.frame_index, self.model_id, born, now, op.dropped)
                      for op, new, born in zip(batch, new_states, created) if isinstance(op, _Step)]
            saved = available
            if available and writes:
                try:
                    await self.sessions.put_many(writes)
                except CacheUnavailable:  # these masks are good; the next frames start without context
                    saved = False
            shared = {**timings, "state_put": _ms(time.perf_counter() - inferred)}
            for op, (probability, size), new, note in zip(batch, outputs, new_states, notes):
                source = "stream" if isinstance(op, _Step) else "image"
                self._observe(source, op.received, 1)
                dropped = op.dropped if isinstance(op, _Step) else 0
                latency = (time.perf_counter() - op.received) * 1000
                frame_timings = {"decode": round(op.decode_ms, 2), "wait": _ms(started - op.submitted), **shared}
                _resolve(op.future, FrameResult(probability, size, new.frame_index - 1, latency, dropped, note, saved,
                                                frame_timings))
        except Exception as error:  # e.g. the store failed in an unexpected way: these frames are lost
            for op in batch:
                _fail(op, error)
        finally:
            for sid in sessions:
                self._unstored[sid] -= 1
                if not self._unstored[sid]:
                    del self._unstored[sid]

    async def _stored(self, session_id: str) -> None:
        """Wait until no write-back of this session is pending (writes finish in order)."""
        if self._unstored.get(session_id) and self._storing is not None:
            await asyncio.gather(self._storing, return_exceptions=True)

    def _infer_clip(self, frames: list[np.ndarray], previous: Any) -> tuple[list[np.ndarray], Any]:
        with torch.inference_mode():
            # The very chunk step `predict_clip` runs, so jobs equal `vsod predict` bit for bit.
            return self.predictor._clip_chunk(frames, previous)

    async def _in_thread(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _observe(self, source: str, start: float, frames: int) -> None:
        self.metrics.frames.labels(source).inc(frames)
        self.metrics.frame_seconds.labels(source).observe(time.perf_counter() - start)


def inference_executor() -> ThreadPoolExecutor:
    """The single thread a process should run all its torch work on, model loading included.

    OpenMP (libgomp) gives each thread that starts parallel work its own team of workers; once two
    threads have teams there are more OpenMP threads than cores on a 2-core box and libgomp stops
    spinning between ops, which made 2-thread inference 2-3x slower (8 vs 21 ms a frame, 256x256).
    """
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="vsod-infer")


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():  # the client may have gone away meanwhile
        future.set_result(value)


def retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a future's failure as seen (someone else re-raises it), so asyncio does not log it."""
    if not future.cancelled():
        future.exception()


def _fail(op: _Op, error: BaseException) -> None:
    for future in (op.future, getattr(op, "computed", None)):
        if future is not None and not future.done():
            future.set_exception(error)
