"""Redis and worker faults against a Redis this module starts itself on a free port (the shared one on
6379 is never stopped): Redis down at start, Redis lost and back mid-stream, a server killed mid-job."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import signal
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis

from service.model import Predictor
from tests.servers import (
    Server,
    decode_png_mask,
    free_port,
    max_diff,
    moving_square_frames,
    open_stream,
    png,
    send_and_receive,
    start_server,
    stop_server,
    write_clip,
)

WAIT_S = 180  # upper bounds for a busy two-core machine, not speed targets
SETTINGS = {"job_lease_s": 1.5, "clip_chunk": 2, "redis_retry_s": 0.5}
FRAMES = 360  # for the killed job: enough two-frame chunks that it is caught mid-way, on a fast machine too

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server binary")


class RedisProcess:
    """A throwaway redis-server (no persistence) that a test can stop and start again on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = tempfile.mkdtemp(prefix="vsod-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.process is not None:
            return
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port, socket_connect_timeout=0.5).ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)
            self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)


@pytest.fixture(scope="module")
def redis_process() -> Iterator[RedisProcess]:
    process = RedisProcess()
    yield process
    process.stop()
    shutil.rmtree(process.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def server(model_store_env: dict[str, str], redis_process: RedisProcess) -> Iterator[Server]:
    """Started while its Redis is still down: it must come up alive (healthz), just not ready."""
    running = start_server(model_store_env, ready_path="/healthz", redis_url=redis_process.url, **SETTINGS)
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def predictor(model_store) -> Predictor:  # type: ignore[no-untyped-def]
    return Predictor(*model_store.load("test-student"), device="cpu")


def wait_until(check, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"not {what} after {WAIT_S} s"
        time.sleep(0.1)


def test_redis_down_at_start(server: Server, redis_process: RedisProcess, predictor: Predictor) -> None:
    redis_process.stop()
    ready = httpx.get(f"{server.url}/readyz", timeout=30)
    assert ready.status_code == 503 and "session store (redis) unreachable" in ready.json()["detail"]
    assert httpx.get(f"{server.url}/healthz").status_code == 200  # alive, not ready
    # What needs the store says so clearly; streams still run, without temporal context.
    session = httpx.get(f"{server.url}/v1/sessions/cam", timeout=30)
    assert session.status_code == 503 and "unavailable" in session.json()["detail"]
    upload = httpx.post(f"{server.url}/v1/clips", files={"file": ("c.mp4", b"x" * 100, "video/mp4")}, timeout=30)
    assert upload.status_code in (400, 503)  # refused either way (not a video), never a 500
    frames = moving_square_frames(2, seed=1)

    async def main() -> tuple[dict, list[tuple[dict, bytes]]]:
        connection, hello = await open_stream(server.ws_url, "early")
        pairs = [await send_and_receive(connection, png(frame)) for frame in frames]
        await connection.close()
        return hello, pairs

    hello, pairs = asyncio.run(main())
    assert hello["temporal"] is False and hello["frame"] == 0
    assert [(h["frame"], h["temporal"]) for h, _ in pairs] == [(0, False), (1, False)]
    for (_, mask), frame in zip(pairs, frames, strict=True):  # each frame on its own: the still-image result
        assert max_diff(decode_png_mask(mask), predictor.predict_image(frame)) <= 1

    redis_process.start()
    wait_until(lambda: httpx.get(f"{server.url}/readyz", timeout=30).status_code == 200, "ready once Redis is up")


def test_stream_goes_on_without_redis_and_recovers(server: Server, redis_process: RedisProcess, predictor: Predictor) -> None:
    redis_process.start()
    frames = moving_square_frames(60, seed=7)

    async def main() -> list[tuple[dict, np.ndarray]]:
        connection, hello = await open_stream(server.ws_url, "walker")
        assert hello["temporal"] is True and hello["frame"] == 0
        out = []

        async def one(index: int) -> dict:
            header, body = await send_and_receive(connection, png(frames[index]))
            out.append((header, decode_png_mask(body)))
            return header

        for index in range(3):
            assert (await one(index))["temporal"] is True
        redis_process.stop()  # lost mid-stream (no persistence: its data goes with it)
        for index in range(3, 6):
            assert (await one(index))["temporal"] is False
        redis_process.start()
        index = 6
        while not (await one(index))["temporal"]:  # the breaker retries Redis by itself
            index += 1
            assert index < len(frames) - 2, "the stream did not recover"
            await asyncio.sleep(0.1)
        await one(index + 1)
        await connection.close()
        return out

    out = asyncio.run(main())
    headers = [h for h, _ in out]
    assert [h["frame"] for h in headers] == list(range(len(out)))  # numbering never jumps or restarts
    back = next(i for i, h in enumerate(headers) if i >= 3 and h["temporal"])
    assert "store was unavailable" in headers[back]["restarted"] and "restarted" not in headers[back + 1]
    assert all("restarted" not in h for h in headers[:back])
    # Before the loss: the temporal path. During it: frame by frame. After it: a fresh context again.
    offline = list(predictor.predict_clip(frames[:3]))
    assert all(max_diff(mask, expected) <= 1 for (_, mask), expected in zip(out[:3], offline, strict=True))
    for (_, mask), frame in zip(out[3:back], frames[3:back], strict=True):
        assert max_diff(mask, predictor.predict_image(frame)) <= 1
    resumed = list(predictor.predict_clip(frames[back : back + 2]))
    assert all(max_diff(mask, expected) <= 1 for (_, mask), expected in zip(out[back:], resumed, strict=True))
    info = httpx.get(f"{server.url}/v1/sessions/walker").json()
    assert info["frame"] == len(out)  # the state is stored again


def test_server_killed_mid_job_is_requeued(server: Server, redis_process: RedisProcess, model_store_env: dict[str, str],
                                           tmp_path: Path) -> None:
    redis_process.start()
    wait_until(lambda: httpx.get(f"{server.url}/readyz", timeout=30).status_code == 200, "ready")
    clip = write_clip(tmp_path / "long.mp4", moving_square_frames(FRAMES, seed=8))
    response = httpx.post(f"{server.url}/v1/clips", files={"file": (clip.name, clip.read_bytes(), "video/mp4")}, timeout=60)
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]

    def started() -> bool:
        status = httpx.get(f"{server.url}/v1/jobs/{job_id}").json()
        assert status["status"] != "done", "the job finished before the kill; give it more frames"
        return status["status"] == "running" and status["frames_done"] > 0

    wait_until(started, "running")
    server.process.kill()  # SIGKILL: no shutdown code runs
    server.process.wait()
    record = json.loads(redis_process.client().get(f"vsod:job:{job_id}"))
    assert record["status"] == "running"  # what a dead worker leaves behind

    second = start_server(model_store_env, redis_url=redis_process.url, **SETTINGS)
    try:
        wait_until(lambda: httpx.get(f"{second.url}/v1/jobs/{job_id}").json()["status"] in ("done", "failed"), "finished")
        status = httpx.get(f"{second.url}/v1/jobs/{job_id}").json()
        assert status["status"] == "done" and status["attempts"] == 2 and status["frames_done"] == FRAMES, status
        result = httpx.get(f"{second.url}/v1/jobs/{job_id}/result")
        with zipfile.ZipFile(io.BytesIO(result.content)) as archive:
            assert sorted(archive.namelist()) == [f"{i:05d}.png" for i in range(FRAMES)]
    finally:
        stop_server(second)
