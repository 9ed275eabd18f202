"""Graceful shutdown of a real server process: SIGTERM answers the stream's frames in flight, closes the
WebSocket with 1001, and gives the running clip job back to the queue at once; a second server
process finishes the job and resumes the session."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from websockets.exceptions import ConnectionClosed

from service.live import SessionState
from tests.servers import (
    REDIS_URL,
    Server,
    delete_prefix,
    moving_square_frames,
    open_stream,
    png,
    redis_prefix,
    send_and_receive,
    start_server,
    stop_server,
    write_clip,
)

FRAMES = 200  # enough two-frame chunks that the job is still running when the signal comes
WAIT_S = 180  # upper bounds for a busy two-core machine, not speed targets
# A long lease: the job must come back because the server gave it back, not because a lease lapsed.
SETTINGS = {"job_lease_s": 120, "clip_chunk": 2}


@pytest.fixture()
def prefix() -> Iterator[str]:
    name = redis_prefix()
    yield name
    delete_prefix(name)


def wait_until(check, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"not {what} after {WAIT_S} s"
        time.sleep(0.1)


def test_sigterm_drains_streams_and_gives_jobs_back(model_store_env: dict[str, str], prefix: str, tmp_path: Path) -> None:
    first = start_server(model_store_env, redis_url=REDIS_URL, redis_prefix=prefix, **SETTINGS)
    try:
        clip = write_clip(tmp_path / "long.mp4", moving_square_frames(FRAMES, seed=3))
        response = httpx.post(f"{first.url}/v1/clips", files={"file": (clip.name, clip.read_bytes(), "video/mp4")})
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        wait_until(lambda: httpx.get(f"{first.url}/v1/jobs/{job_id}").json()["frames_done"] > 0, "running")
        headers, close_code = asyncio.run(_stream_through_sigterm(first))
        first.process.wait(timeout=60)
        assert "drain failed" not in first.output() and "Traceback" not in first.output(), first.output()
    finally:
        stop_server(first)

    # Every frame the server took was answered or counted as dropped, then it closed with 1001.
    assert close_code == 1001
    assert [h["frame"] for h in headers] == list(range(len(headers)))
    assert len(headers) + headers[-1]["dropped"] == 3 and all(h["temporal"] for h in headers)

    # The job went back to the front of the queue at once: queued, no lease, nothing running.
    client = redis.Redis.from_url(REDIS_URL)
    try:
        record = json.loads(client.get(f"{prefix}:job:{job_id}"))
        assert record["status"] == "queued", f"the job was not running at the signal: {record}"
        assert record["attempts"] == 0 and record["frames_done"] == 0  # a shutdown is not a failed attempt
        assert client.lrange(f"{prefix}:jobs:queue", 0, -1) == [job_id.encode()]
        assert client.llen(f"{prefix}:jobs:running") == 0 and not client.exists(f"{prefix}:job:{job_id}:lease")
        assert SessionState.from_bytes(client.get(f"{prefix}:session:cam")).frame == len(headers)  # all saved
    finally:
        client.close()

    second = start_server(model_store_env, redis_url=REDIS_URL, redis_prefix=prefix, **SETTINGS)
    try:
        wait_until(lambda: httpx.get(f"{second.url}/v1/jobs/{job_id}").json()["status"] in ("done", "failed"), "done")
        status = httpx.get(f"{second.url}/v1/jobs/{job_id}").json()
        assert status["status"] == "done" and status["frames_done"] == FRAMES and status["attempts"] == 1

        async def resume() -> dict:
            connection, hello = await open_stream(second.ws_url, "cam")
            await connection.close()
            return hello

        assert asyncio.run(resume())["frame"] == len(headers)  # the session continues on another process
    finally:
        stop_server(second)


async def _stream_through_sigterm(server: Server) -> tuple[list[dict], int | None]:
    """A frame in lockstep, then two more and a config message: once the config is acknowledged the
    server has taken both frames (messages are read in order), and the signal goes out at once."""
    frames = [png(frame) for frame in moving_square_frames(3, seed=4)]
    connection, _ = await open_stream(server.ws_url, "cam")
    first, _ = await send_and_receive(connection, frames[0])
    headers = [first]
    await connection.send(frames[1])
    await connection.send(frames[2])
    await connection.send(json.dumps({"type": "config", "format": "png"}))
    signalled = False
    try:
        while True:
            message = await connection.recv()
            if isinstance(message, bytes):
                continue
            parsed = json.loads(message)
            if parsed["type"] == "config" and not signalled:
                server.process.send_signal(signal.SIGTERM)
                signalled = True
            elif parsed["type"] == "mask":
                headers.append(parsed)
    except ConnectionClosed:
        pass
    assert signalled
    return headers, connection.close_code



def test_an_in_memory_job_store_leaves_no_blobs_in_a_kept_spool(model_store_env: dict[str, str], tmp_path: Path) -> None:
    """With VSOD_SPOOL_DIR set the spool outlives the process, but in-memory jobs do not: a clean stop
    removes their uploads and results too, instead of leaving them for the next start to find."""
    spool = tmp_path / "spool"
    server = start_server(model_store_env, spool_dir=spool, job_workers=0)
    try:
        clip = write_clip(tmp_path / "clip.avi", moving_square_frames(4, seed=3))
        created = httpx.post(f"{server.url}/v1/clips", files={"file": ("clip.avi", clip.read_bytes(), "video/x-msvideo")})
        assert created.status_code == 202, created.text
        blobs = list(spool.rglob("vsod-blobs-*"))
        assert len(blobs) == 1 and any(blobs[0].iterdir())  # the queued upload, held by the store
    finally:
        stop_server(server)
    assert spool.is_dir() and not list(spool.rglob("vsod-blobs-*"))
