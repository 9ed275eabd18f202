"""The inference engine: one model per process, one inference thread, every request in FIFO order.

Streams, still images and clip jobs all submit operations to one queue. A single asyncio task
takes them in order; frames of different sessions run as one `Predictor.infer_batch` (a micro-batch
of up to `batch_size`), with their contexts loaded in one round trip and saved in one through the
injected `StateIO` (service/engine_types.py): the engine knows neither how a context is stored nor
when a stored one may be resumed (that is the live-session owner's, service/live/). The model runs
on a dedicated thread, so the event loop never blocks and one model instance serves every session.

Micro-batching: the worker takes every frame already waiting (one per session), then waits up to
`batch_wait_ms` for the frames of other sessions that `BatchWindow` says are due (service/batch_window.py),
so sessions in lockstep with their masks share a pass. A lone stream never waits.

Pipelining: the worker does not wait for a batch's contexts to be saved. As soon as the model
returns, each stream learns its new context (`StepTicket.computed`) and the save runs beside the
next batch; the mask is released (`StepTicket.result`) once its context is stored, so a mask never
gets ahead of the context a reconnecting client would resume from. A stream's next frame that is
handed over while that save is still pending carries the computed context with it
(`FrameRequest.context`) and skips the load; any other frame is loaded after the pending saves of
its session have landed. Saves run in batch order.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .batch_window import BatchWindow
from .engine_types import Context, EngineClosed, FrameRequest, FrameResult, StateIO, StepTicket, retrieve
from .metrics import Metrics
from .model import Predictor


@dataclass
class _Step:
    request: FrameRequest
    future: asyncio.Future[FrameResult] = field(repr=False)
    computed: asyncio.Future[Context] = field(repr=False)
    submitted: float = field(default_factory=time.perf_counter)

    @property
    def session_id(self) -> str:
        return self.request.session


@dataclass
class _Image:
    frame: np.ndarray
    received: float
    future: asyncio.Future[FrameResult] = field(repr=False)
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


@dataclass
class _Answer:
    """What a batch produced for one op, kept until its context is saved."""

    op: _Step | _Image
    probability: np.ndarray
    context: Context | None  # the stream's new context (None for images)
    restarted: str | None


class Engine:
    def __init__(
        self, predictor: Predictor, state_io: StateIO, metrics: Metrics | None = None, batch_size: int = 1,
        batch_wait_ms: float = 0.0, executor: ThreadPoolExecutor | None = None,
    ) -> None:
        self.predictor, self.state_io, self.batch_size = predictor, state_io, batch_size
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
        self._storing: asyncio.Task[None] | None = None  # the latest batch's save (they run in order)
        self._unstored: dict[str, int] = {}  # session -> its batches whose save has not finished
        self.metrics.track_queue(lambda: self.queue_depth)

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._arrived = asyncio.Event()
        if self.predictor.backend != "eager":  # optimised graphs specialise per batch size
            await self._in_thread(self.predictor.runtime.warmup, range(1, self.batch_size + 1))
        self._task = asyncio.create_task(self._run(), name="vsod-engine")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._storing is not None:  # masks already computed: store their contexts and answer them
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
        """A still image: a one-frame stream with no stored context."""
        future: asyncio.Future[FrameResult] = asyncio.get_running_loop().create_future()
        self._submit(_Image(frame, time.perf_counter(), future))
        result = await future
        return await asyncio.to_thread(lambda: result.mask)

    def submit_step(self, request: FrameRequest) -> StepTicket:
        """Queue a stream's next frame; its context comes with it or is loaded through `StateIO`."""
        loop = asyncio.get_running_loop()
        ticket = StepTicket(loop.create_future(), loop.create_future())
        ticket.computed.add_done_callback(retrieve)  # a failure is re-raised by `result`; seen once is enough
        self._submit(_Step(request, ticket.result, ticket.computed))
        return ticket

    async def reset(self, session_id: str) -> None:
        """Forget the session's stored context, in order after any of its frames already queued."""
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
                    await self._stored(op.session_id)  # a save still pending must not recreate it
                    await self.state_io.forget(op.session_id)
                    _resolve(op.future, None)
                elif isinstance(op, _Clip):
                    start = time.perf_counter()
                    out = await self._in_thread(self.predictor.clip_chunk, op.frames, op.previous)
                    self._observe("clip", start, len(op.frames))
                    _resolve(op.future, out)
                else:
                    await self._run_frames(batch)  # type: ignore[arg-type]
            except asyncio.CancelledError:
                for pending in batch:
                    _fail(pending, EngineClosed("the server is shutting down"))
                raise
            except Exception as error:  # noqa: BLE001 - one bad batch must not stop the worker
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
                except TimeoutError:
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
        """Load the contexts the frames do not carry, run the model, hand each stream its new context,
        and leave the save and the masks to `_save_and_answer`, beside the next batch."""
        started = time.perf_counter()
        steps = [op for op in batch if isinstance(op, _Step)]
        self.window.batched(op.session_id for op in steps)
        loads = [op.request for op in steps if op.request.context is None]
        for request in loads:
            await self._stored(request.session)  # load after this session's own pending save, never before it
        loaded, available = await self.state_io.load(loads)
        fetched = time.perf_counter()
        by_session = {request.session: found for request, found in zip(loads, loaded, strict=True)}
        contexts: list[Context | None] = []
        notes: list[str | None] = []
        for op in batch:
            if isinstance(op, _Image):
                contexts.append(None)
                notes.append(None)
            elif op.request.context is not None:
                contexts.append(op.request.context)
                notes.append(None)
            else:
                contexts.append(by_session[op.session_id].context)
                notes.append(by_session[op.session_id].restarted)
        before_model = time.perf_counter()
        frames = [op.request.frame if isinstance(op, _Step) else op.frame for op in batch]
        carried = [context.carried if context is not None else None for context in contexts]
        probabilities, new_carried = await self._in_thread(self.predictor.infer_batch, frames, carried)
        inferred = time.perf_counter()
        new_contexts = [Context(new, context.frame + 1, context.created) if context is not None else None
                        for new, context in zip(new_carried, contexts, strict=True)]
        for op, new_context in zip(batch, new_contexts, strict=True):
            if isinstance(op, _Step) and not op.computed.done():
                assert new_context is not None  # a step always runs with a context, loaded or carried
                op.computed.set_result(new_context)
        timings = {"state_get": _ms(fetched - started), "model": _ms(inferred - before_model), "batch": len(batch)}
        for sid in {op.session_id for op in steps}:
            self._unstored[sid] = self._unstored.get(sid, 0) + 1
        answers = [_Answer(op, probability, context, note)
                   for op, probability, context, note in zip(batch, probabilities, new_contexts, notes, strict=True)]
        self._storing = asyncio.create_task(
            self._save_and_answer(self._storing, answers, available, started, inferred, timings))

    async def _save_and_answer(self, previous: asyncio.Task[None] | None, answers: list[_Answer], available: bool,
                               started: float, inferred: float, timings: dict[str, float]) -> None:
        """Save the batch's contexts (after the previous batch's), then release its masks."""
        steps = [answer for answer in answers if isinstance(answer.op, _Step)]
        sessions = {answer.op.session_id for answer in steps}  # type: ignore[union-attr]
        try:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            saved = available
            if available and steps:  # a store that could not be read is not written either
                saved = await self.state_io.save([a.op.request for a in steps], [a.context for a in steps])  # type: ignore[union-attr,misc]
            shared = {**timings, "state_put": _ms(time.perf_counter() - inferred)}
            for answer in answers:
                op = answer.op
                source = "stream" if isinstance(op, _Step) else "image"
                received = op.request.received if isinstance(op, _Step) else op.received
                self._observe(source, received, 1)
                latency = (time.perf_counter() - received) * 1000
                if isinstance(op, _Step):
                    request = op.request
                    result = FrameResult(answer.probability, request.size, answer.context.frame - 1, latency,  # type: ignore[union-attr]
                                         request.dropped, answer.restarted, saved,
                                         {"decode": round(request.decode_ms, 2), "wait": _ms(started - op.submitted), **shared})
                else:
                    result = FrameResult(answer.probability, op.frame.shape[:2], 0, latency, 0, None, saved,
                                         {"decode": 0.0, "wait": _ms(started - op.submitted), **shared})
                _resolve(op.future, result)
        except Exception as error:  # noqa: BLE001 - e.g. the store failed in an unexpected way: these frames are lost
            for answer in answers:
                _fail(answer.op, error)
        finally:
            for sid in sessions:
                self._unstored[sid] -= 1
                if not self._unstored[sid]:
                    del self._unstored[sid]

    async def _stored(self, session_id: str) -> None:
        """Wait until no save of this session is pending (saves finish in order)."""
        if self._unstored.get(session_id) and self._storing is not None:
            await asyncio.gather(self._storing, return_exceptions=True)

    async def _in_thread(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _observe(self, source: str, start: float, frames: int) -> None:
        self.metrics.frames.labels(source).inc(frames)
        self.metrics.frame_seconds.labels(source).observe(time.perf_counter() - start)


def inference_executor() -> ThreadPoolExecutor:
    """The single thread a process should run all its torch work on, model loading included.

    OpenMP (libgomp) gives each thread that starts parallel work its own team of workers; once two
    threads have teams there are more OpenMP threads than cores on a 2-core box and libgomp stops
    spinning between ops, which made 2-thread inference several times slower (bench/RESULTS.md).
    """
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="vsod-infer")


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():  # the client may have gone away meanwhile
        future.set_result(value)


def _fail(op: _Op, error: BaseException) -> None:
    for future in (op.future, getattr(op, "computed", None)):
        if future is not None and not future.done():
            future.set_exception(error)
