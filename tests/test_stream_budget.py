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
            for frame in frames:  # a burst: each replaces the one before it, before any is due
                slot.offer(png(frame), frame.shape[:2])
            result = await slot.next_event()
            return decoded, slot.dropped, result.frame  # type: ignore[union-attr]
        finally:
            await engine.close()  # type: ignore[attr-defined]

    decoded, dropped, frame = asyncio.run(main())
    assert decoded == [frames[-1].shape[:2]]  # only the frame that ran was decoded
    assert dropped == len(frames) - 1 and frame == 0


def test_a_due_frame_over_the_pixel_budget_is_dropped_undecoded(predictor: Predictor) -> None:
    small, large = moving_square_frames(1, 40, 40)[0], moving_square_frames(1, 300, 400)[0]
    clock = [0.0]
    budget = FrameRate(40 * 40 * 2, clock=lambda: clock[0])  # two small frames' pixels a second

    async def main() -> tuple[list[tuple[int, int]], int, list[int]]:
        slot, decoded, engine = counting_slot(predictor, budget)
        await engine.start()  # type: ignore[attr-defined]
        try:
            frames = []
            slot.offer(png(large), large.shape[:2])  # within a full bucket: passes, and leaves it in debt
            frames.append((await slot.next_event()).frame)  # type: ignore[union-attr]
            slot.offer(png(small), small.shape[:2])  # the debt is not paid back yet: dropped unread
            slot.request_close()
            assert type(await slot.next_event()).__name__ == "StreamClosing"
            clock[0] += 60.0  # a minute later the bucket is full again
            slot.offer(png(small), small.shape[:2])
            frames.append((await slot.next_event()).frame)  # type: ignore[union-attr]
            return decoded, slot.dropped, frames
        finally:
            await engine.close()  # type: ignore[attr-defined]

    decoded, dropped, frames = asyncio.run(main())
    assert decoded == [(300, 400), (40, 40)] and dropped == 1 and frames == [0, 1]
