"""What a client of a live stream receives equals stepping the model by hand, byte for byte: any
refactoring of the stream path (state format, store, engine, route) must leave it exactly so.

One session runs through a Redis-backed server (a plain student, and one with a motion branch,
whose state is twice as large): PNG masks, then raw ones, a reconnection that resumes
the session with its context, and a reset. The oracle is the model itself, in this process: the
same frame bytes decoded as the server decodes them, stepped through `Predictor` with the state
carried, dropped at the reset, and kept across the reconnection. Exact equality holds on any
machine (the first version pinned recorded sha256s, which a new CPU or codec build broke while the
stream path was fine); a wrong, stale or lost state shows as other bytes.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from service.masks import encode_mask
from service.model import ModelStore, Predictor
from service.video import decode_image_bytes
from tests.conftest import TEST_MODEL, TEST_MOTION_MODEL
from tests.servers import (
    REDIS_URL,
    delete_prefix,
    jpeg,
    moving_square_frames,
    next_json,
    open_stream,
    png,
    redis_prefix,
    running_server,
    send_and_receive,
)

FRAMES = 14
RAW_FROM, RESUME_AT, RESET_AT = 5, 8, 11  # frame indices where the session changes format, reconnects, resets


def stream_frames() -> list[bytes]:
    return [png(f) if k % 2 else jpeg(f, 90) for k, f in enumerate(moving_square_frames(FRAMES, seed=3))]


def served_masks(ws_url: str, encoded: list[bytes]) -> tuple[list[bytes], int]:
    """The mask bodies one session receives, and the frame index the reconnection resumed at."""

    async def main() -> tuple[list[bytes], int]:
        bodies: list[bytes] = []
        connection, _ = await open_stream(ws_url, "pinned")
        for frame in encoded[:RAW_FROM]:
            bodies.append((await send_and_receive(connection, frame))[1])
        await connection.send(json.dumps({"type": "config", "format": "raw"}))
        await next_json(connection)
        for frame in encoded[RAW_FROM:RESUME_AT]:
            bodies.append((await send_and_receive(connection, frame))[1])
        await connection.close()
        connection, hello = await open_stream(ws_url, "pinned")  # resumes with its context
        for frame in encoded[RESUME_AT:RESET_AT]:
            bodies.append((await send_and_receive(connection, frame))[1])
        await connection.send(json.dumps({"type": "reset"}))
        await next_json(connection)
        for frame in encoded[RESET_AT:]:
            bodies.append((await send_and_receive(connection, frame))[1])
        await connection.close()
        return bodies, int(hello["frame"])

    return asyncio.run(main())


def served_format(index: int) -> str:
    """Raw masks only between the config message and the reconnection: a new connection starts with PNG."""
    return "raw" if RAW_FROM <= index < RESUME_AT else "png"


def stepped_masks(predictor: Predictor, encoded: list[bytes]) -> list[bytes]:
    """The same session, stepped by hand: state carried, kept across the reconnection, dropped at the reset."""
    bodies, carried = [], None
    for index, frame in enumerate(encoded):
        if index == RESET_AT:
            carried = None
        mask, carried = predictor.step(decode_image_bytes(frame), carried)
        bodies.append(encode_mask(mask, served_format(index), None))
    return bodies


@pytest.mark.parametrize(("model", "backend"), [(TEST_MODEL, "onnxruntime"), (TEST_MODEL, "torchscript"),
                                               (TEST_MOTION_MODEL, "onnxruntime")])
def test_served_stream_masks_equal_stepping_the_model(model_store: ModelStore, motion_model_store: ModelStore,
                                                      model: str, backend: str) -> None:
    store = motion_model_store if model == TEST_MOTION_MODEL else model_store
    encoded = stream_frames()
    prefix = redis_prefix()
    try:
        with running_server({"VSOD_MODEL_STORE": str(store.root), "VSOD_MODEL": model}, redis_url=REDIS_URL,
                            redis_prefix=prefix, backend=backend) as server:
            served, resumed_at = served_masks(server.ws_url, encoded)
    finally:
        delete_prefix(prefix)
    assert resumed_at == RESUME_AT
    predictor = Predictor.from_store(model, store, "cpu", backend, threads=1)
    expected = stepped_masks(predictor, encoded)
    assert [len(body) for body in served] == [len(body) for body in expected]
    differing = [index for index, (a, b) in enumerate(zip(served, expected, strict=True)) if a != b]
    assert not differing, f"frames {differing} differ from stepping the model by hand"
    # The state shows in every mask but a session's first ones: without it (every frame a first
    # frame) each other mask comes out otherwise, so a lost state (at the resume, say) cannot pass.
    stateless = [encode_mask(predictor.step(decode_image_bytes(frame))[0], served_format(k), None)
                 for k, frame in enumerate(encoded)]
    assert [a != b for a, b in zip(stateless, expected, strict=True)] == [k not in (0, RESET_AT) for k in range(FRAMES)]
    assert len(served[RAW_FROM]) == 72 * 96  # raw: one byte per pixel at the frame's size
