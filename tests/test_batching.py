"""The engine's micro-batch window: frames of active sessions that arrive within it share a pass."""

from __future__ import annotations

import asyncio

import numpy as np

from service.batch_window import ACTIVE_S
from service.engine_types import FrameResult
from service.model import ModelStore, Predictor

from .engines import memory_engine, step
from .servers import max_diff, moving_square_frames


def test_batch_window_gathers_active_sessions_and_a_lone_stream_never_waits(model_store: ModelStore) -> None:
    predictor = Predictor(*model_store.load("test-student"), device="cpu", backend="torchscript")
    frames = moving_square_frames(4, seed=21)

    async def main() -> tuple[FrameResult, FrameResult, FrameResult]:
        # A window far longer than the test: a lone stream that waited for it would hang here.
        engine = memory_engine(predictor, batch_size=4, batch_wait_ms=600_000)
        await engine.start()
        try:
            lone = await asyncio.wait_for(step(engine, "a", frames[0]), 120)  # only "a" is active
            await step(engine, "b", frames[1])  # now two sessions are active
            first = asyncio.ensure_future(step(engine, "a", frames[2]))
            await asyncio.sleep(0.05)  # "b" arrives later, within the window: same pass
            second = await step(engine, "b", frames[3])
            return lone, await first, second
        finally:
            await engine.close()

    lone, a1, b1 = asyncio.run(main())
    assert lone.timings["batch"] == 1 and lone.frame == 0
    assert a1.timings["batch"] == 2 and b1.timings["batch"] == 2 and (a1.frame, b1.frame) == (1, 1)
    assert set(a1.timings) >= {"decode", "wait", "state_get", "model", "state_put", "batch"}
    # Batched results equal each session's own steps.
    _, state_a = predictor.step(frames[0])
    assert max_diff(a1.mask, predictor.step(frames[2], state_a)[0]) <= 1
    assert isinstance(b1.mask, np.ndarray) and b1.mask.shape == frames[3].shape[:2]


def test_closing_during_the_window_fails_the_waiting_frames(model_store: ModelStore) -> None:
    predictor = Predictor(*model_store.load("test-student"), device="cpu")

    async def main() -> list[object]:
        engine = memory_engine(predictor, batch_size=4)
        await engine.start()
        frames = moving_square_frames(3, seed=2)
        for session, frame in zip("abc", frames, strict=True):  # three active sessions, no window yet
            await step(engine, session, frame)
        engine.batch_wait_s = 600
        pending = [asyncio.ensure_future(step(engine, s, frames[0])) for s in ("a", "b")]
        await asyncio.sleep(0.05)  # the worker is now waiting for "c" within the window
        await engine.close()
        return await asyncio.gather(*pending, return_exceptions=True)

    outcomes = asyncio.run(main())
    assert all(type(o).__name__ == "EngineClosed" for o in outcomes), outcomes


def test_window_does_not_wait_for_a_session_whose_frame_is_not_due(model_store: ModelStore) -> None:
    """A session with a known rhythm whose next frame is overdue (a camera that stopped, or sends at
    its own phase) is not waited for: with a window far longer than the test, waiting would hang."""
    predictor = Predictor(*model_store.load("test-student"), device="cpu")
    frames = moving_square_frames(4, seed=23)

    async def main() -> FrameResult:
        engine = memory_engine(predictor, batch_size=4)
        await engine.start()
        try:
            await step(engine, "a", frames[0])
            await step(engine, "b", frames[1])
            await asyncio.sleep(0.05)
            await step(engine, "b", frames[2])  # b's rhythm: a frame every ~0.05 s
            await asyncio.sleep(0.3)  # b is now well past due, but still counts as streaming
            engine.batch_wait_s = 600
            assert engine.window.active_sessions() == 2  # by session count alone, a's frame would wait for b's
            return await asyncio.wait_for(step(engine, "a", frames[3]), 60)
        finally:
            await engine.close()

    result = asyncio.run(main())
    assert result.timings["batch"] == 1 and result.frame == 1


def test_the_window_forgets_idle_sessions(model_store: ModelStore) -> None:
    """What the window keeps per session is dropped once the session is idle, unbatched engines too."""
    predictor = Predictor(*model_store.load("test-student"), device="cpu")
    frames = moving_square_frames(4, seed=29)

    async def main() -> tuple[set[str], set[str]]:
        engine = memory_engine(predictor, batch_size=1)
        await engine.start()
        try:
            for session, frame in zip("abc", frames[:3], strict=True):
                await step(engine, session, frame)
            await asyncio.sleep(ACTIVE_S + 0.1)
            await step(engine, "d", frames[3])
            return set(engine.window.seen), set(engine.window.arrivals)
        finally:
            await engine.close()

    assert asyncio.run(main()) == ({"d"}, {"d"})
