"""A recorded stream pins the served masks byte for byte: any refactoring of the stream path
(state format, store, engine, route) must leave what clients receive exactly as it was.

The recording (tests/data/stream_pinned.json) holds, per serving backend, the sha256 of every mask
of one session: frames through a Redis-backed server, a reset, a reconnection that resumes the
session, with raw and PNG masks. The torchscript one was made with the code before the stream-owner
redesign (issue "One owner for a live stream's state"), the onnxruntime one when that backend came
(its masks are within one grey level of the others, not equal). Regenerate a backend's recording
only for a deliberate change of its masks:

    VSOD_RECORD_PINNED=onnxruntime python3 -m pytest tests/test_stream_pinned.py
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path

import pytest

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

RECORDING = Path(__file__).parent / "data" / "stream_pinned.json"


def record_stream(ws_url: str) -> list[str]:
    frames = moving_square_frames(14, seed=3)
    encoded = [png(f) if k % 2 else jpeg(f, 90) for k, f in enumerate(frames)]

    async def main() -> list[str]:
        digests: list[str] = []
        connection, _ = await open_stream(ws_url, "pinned")
        for frame in encoded[:5]:
            _, body = await send_and_receive(connection, frame)
            digests.append(hashlib.sha256(body).hexdigest())
        await connection.send(json.dumps({"type": "config", "format": "raw"}))
        await next_json(connection)
        for frame in encoded[5:8]:
            _, body = await send_and_receive(connection, frame)
            digests.append(hashlib.sha256(body).hexdigest())
        await connection.close()
        connection, hello = await open_stream(ws_url, "pinned")  # resumes at frame 8 with its context
        digests.append(f"resumed at {hello['frame']}")
        for frame in encoded[8:11]:
            _, body = await send_and_receive(connection, frame)
            digests.append(hashlib.sha256(body).hexdigest())
        await connection.send(json.dumps({"type": "reset"}))
        await next_json(connection)
        for frame in encoded[11:]:
            _, body = await send_and_receive(connection, frame)
            digests.append(hashlib.sha256(body).hexdigest())
        await connection.close()
        return digests

    return asyncio.run(main())


@pytest.mark.parametrize("backend", ["onnxruntime", "torchscript"])
def test_recorded_stream_masks_are_byte_identical(model_store_env: dict[str, str], backend: str) -> None:
    prefix = redis_prefix()
    try:
        with running_server(model_store_env, redis_url=REDIS_URL, redis_prefix=prefix, backend=backend) as server:
            digests = record_stream(server.ws_url)
    finally:
        delete_prefix(prefix)
    recordings = json.loads(RECORDING.read_text())
    if os.environ.get("VSOD_RECORD_PINNED") == backend:
        RECORDING.write_text(json.dumps({**recordings, backend: digests}, indent=1) + "\n")
    else:
        assert digests == recordings[backend]
