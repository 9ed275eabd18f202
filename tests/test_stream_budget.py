"""A frame costs nothing until it is due: replaced frames are never decoded, and decoding is bounded
in pixels a second per stream (issue "Hardening", item 3). The flood's effect on another session's
latency is measured by bench/flood.py, as a ratio."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from service.limits import FrameRate
from service.live import StreamSlot
from service.model import Predictor
from tests.engines import memory_engine
from tests.servers import moving_square_frames, png


@pytest.fixture(scope="module")
def predictor(model_store) -> Predictor:  # type: ignore[no-untyped-def]
    return Predictor(*model_store.load("test-student"), device="cpu")


def counting_slot(predictor: Predictor, budget: FrameRate | None = None) -> tuple[StreamSlot, list[tuple[int, int]], object]:
    engine = memory_engine(predictor)
    decoded: list[tuple[int, int]] = []

    def prepare(data: bytes, size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
        decoded.append(size)
        return engine.state_io.prepare_frame(data, size)  # type: ignore[attr-defined]

    return StreamSlot(engine, "s", prepare, decode_budget=budget), decoded, engine


def test_frames_replaced_while_waiting_are_never_decoded(predictor: Predictor) -> None:
    frames = moving_square_frames(6, seed=4)

    async def main() -> tuple[list[tuple[int, int]], int, int]:
        slot, decoded, engine = counting_slot(predictor)
        await engine.start()  # type: ignore[attr-defined]
        try:
            for frame in frames:  # a burst: the first goes at once, each later one replaces the one before it
                slot.offer(png(frame), frame.shape[:2])
            results = [await slot.next_event(), await slot.next_event()]
            return decoded, slot.dropped, [r.frame for r in results]  # type: ignore[union-attr]
        finally:
            await engine.close()  # type: ignore[attr-defined]

    decoded, dropped, answered = asyncio.run(main())
    assert len(decoded) == 2  # only the two frames that ran were decoded
    assert dropped == len(frames) - 2 and answered == [0, 1]


def test_large_frames_are_slowed_to_the_pixel_budget_and_still_answered(predictor: Predictor) -> None:
    """Frames of 300x400 against a budget of one such frame a second: the first passes on the full
    bucket, the next waits for the budget (the clock says how long), and every frame is answered."""
    frame = moving_square_frames(1, 300, 400)[0]
    clock = [0.0]
    budget = FrameRate(300 * 400, clock=lambda: clock[0])  # one frame's pixels a second
    waits: list[float] = []
    reserve = budget.reserve
    budget.reserve = lambda cost: (waits.append(reserve(cost)), waits[-1])[1]  # type: ignore[method-assign]

    async def main() -> tuple[list[int], int]:
        slot, decoded, engine = counting_slot(predictor, budget)
        await engine.start()  # type: ignore[attr-defined]
        try:
            answered = []
            for _ in range(3):
                slot.offer(png(frame), frame.shape[:2])
                answered.append((await slot.next_event()).frame)  # type: ignore[union-attr]
            return answered, len(decoded)
        finally:
            await engine.close()  # type: ignore[attr-defined]

    answered, decoded = asyncio.run(main())
    assert answered == [0, 1, 2] and decoded == 3
    assert waits == [0.0, 1.0, 2.0]  # the clock stands still: each frame waits one more second of budget


def test_the_token_bucket_reserves_into_debt() -> None:
    clock = [0.0]
    bucket = FrameRate(100, clock=lambda: clock[0])
    assert bucket.reserve(50) == 0.0 and bucket.reserve(50) == 0.0  # the burst: one second's worth
    assert bucket.reserve(250) == 1.0  # waits until a full burst's worth is there, then owes the rest
    clock[0] += 3.5
    assert bucket.reserve(10) == 0.0  # the debt (-250) is paid back after 2.5 s
