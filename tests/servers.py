"""Test helpers: real uvicorn servers in subprocesses, a Redis key namespace per test module, clips.

    with running_server(model_store_env, VSOD_REDIS_URL=REDIS_URL) as server:
        httpx.get(server.url + "/readyz")

Servers run `vsod serve` (as `python -m service.cli serve`) with settings from `VSOD_*` variables,
on a free port, and are ready when /readyz answers 200. A server answers /healthz while its model
loads; `start_server` returns only once loading is over (/readyz no longer says `loading`), whatever
`ready_path` it waits for. Their output goes to a log file that a failed start prints.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import httpx
import numpy as np

from service.process import LOADING  # how /readyz's 503 detail begins until the server is ready

REDIS_URL = os.environ.get("VSOD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 120  # generous: the CI machine is small and shared; not a speed assertion
SERVE = [sys.executable, "-m", "service.cli", "serve"]  # `vsod serve`, from this checkout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str
    ws_url: str
    process: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str]

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(env: dict[str, str], ready_path: str = "/readyz", **settings: object) -> Server:
    """Start a server with `env` (e.g. model_store_env) plus VSOD_<NAME> settings; wait for 200 at `ready_path`."""
    port = free_port()
    full = {**os.environ, **env, "VSOD_HOST": "127.0.0.1", "VSOD_PORT": str(port), "VSOD_LOG_LEVEL": "warning"}
    full.update({key if key.startswith("VSOD_") else f"VSOD_{key.upper()}": str(value) for key, value in settings.items()})
    full["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), full.get("PYTHONPATH")]))
    full.setdefault("OMP_NUM_THREADS", "1")  # two small cores shared with other processes
    log = Path(tempfile.mkstemp(prefix=f"vsod-server-{port}-", suffix=".log")[1])
    with log.open("wb") as out:
        process = subprocess.Popen(SERVE, cwd=REPO, env=full, stdout=out, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", process, log, full)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.output()}")
        try:
            if httpx.get(server.url + ready_path, timeout=2).status_code == 200 and not loading(server):
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_server(server)
    raise RuntimeError(f"server not ready after {START_TIMEOUT_S} s:\n{server.output()}")


def loading(server: Server) -> bool:
    """True while the server is still loading its model (alive, /readyz 503 `loading: ...`)."""
    response = httpx.get(server.url + "/readyz", timeout=5)
    return response.status_code == 503 and str(response.json().get("detail", "")).startswith(LOADING)


def stop_server(server: Server) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
    server.log.unlink(missing_ok=True)


@contextmanager
def running_server(env: dict[str, str], ready_path: str = "/readyz", **settings: object) -> Iterator[Server]:
    server = start_server(env, ready_path, **settings)
    try:
        yield server
    finally:
        stop_server(server)


def redis_prefix() -> str:
    """A fresh key namespace, so tests never touch real data or each other's keys."""
    return f"vsodtest-{uuid.uuid4().hex[:12]}"


def redis_keys(prefix: str) -> list[str]:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        return sorted(key.decode() for key in client.scan_iter(match=f"{prefix}:*", count=1000))
    finally:
        client.close()


def delete_prefix(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


# ---------------------------------------------------------------- media


def moving_square_frames(count: int, height: int = 72, width: int = 96, seed: int = 0) -> list[np.ndarray]:
    """Small RGB frames: textured background, a bright square moving across (salient-looking)."""
    rng = np.random.default_rng(seed)
    background = rng.integers(40, 120, (height, width, 3), dtype=np.uint8)
    frames = []
    for index in range(count):
        frame = background.copy()
        x = 4 + (index * 3) % max(1, width - 28)
        frame[20:44, x : x + 24] = (240, 200, 40)
        frames.append(frame)
    return frames


def jpeg(frame: np.ndarray, quality: int = 95) -> bytes:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return data.tobytes()


def png(frame: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    assert ok
    return data.tobytes()


def decode_png_mask(data: bytes) -> np.ndarray:
    mask = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert mask is not None and mask.dtype == np.uint8 and mask.ndim == 2
    return mask


def png_claiming(width: int, height: int) -> bytes:
    """A valid-looking PNG of a few hundred bytes whose header claims width x height (a bomb)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + chunk(b"IEND", b"")


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real small JPEG with its frame header rewritten to claim width x height."""
    data = bytearray(jpeg(moving_square_frames(1)[0]))
    at = data.index(b"\xff\xc0")
    data[at + 5 : at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def write_clip(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    """A small video file: MJPG in .avi, mp4v in .mp4 (OpenCV's writer; any decodable codec will do), or
    an animated .gif (Pillow's writer: OpenCV writes no GIF)."""
    if path.suffix == ".gif":
        from PIL import Image

        images = [Image.fromarray(frame) for frame in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
        return path
    fourcc = cv2.VideoWriter.fourcc(*("MJPG" if path.suffix == ".avi" else "mp4v"))
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), fourcc, fps, (width, height))
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def encode_clip(path: Path, frames: Iterable[np.ndarray], codec: str, rate: int = 10,
                options: dict[str, str] | None = None) -> Path:
    """A video written frame by frame with PyAV (`frames` may be a generator: a long clip is never held whole)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, options=options or {})
        assert isinstance(stream, av.VideoStream), f"{codec} is not a video codec"
        for index, frame in enumerate(frames):
            if index == 0:
                stream.height, stream.width = frame.shape[:2]
                stream.pix_fmt = "yuv420p"
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts = index
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape, (a.shape, b.shape)
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def run(coro: object) -> object:
    """Run a coroutine from a sync test (the suite does not depend on pytest-asyncio)."""
    return asyncio.run(coro)  # type: ignore[arg-type]


# ---------------------------------------------------------------- WebSocket client


async def open_stream(ws_url: str, session_id: str | None = None) -> tuple[object, dict[str, object]]:
    """Connect to /v1/stream; returns the connection and the server's first (session) message."""
    import json

    from websockets.asyncio.client import connect

    query = f"?session_id={session_id}" if session_id else ""
    connection = await connect(f"{ws_url}/v1/stream{query}", max_size=None)
    hello = json.loads(await connection.recv())
    return connection, hello


async def send_and_receive(connection: object, frame: bytes) -> tuple[dict[str, object], bytes]:
    """One frame in lockstep: send it, then read its mask header and mask (skipping nothing else)."""
    import json

    await connection.send(frame)  # type: ignore[attr-defined]
    header = json.loads(await connection.recv())  # type: ignore[attr-defined]
    assert header["type"] == "mask", header
    body = await connection.recv()  # type: ignore[attr-defined]
    assert isinstance(body, bytes)
    return header, body


async def next_json(connection: object) -> dict[str, object]:
    import json

    message = await connection.recv()  # type: ignore[attr-defined]
    assert isinstance(message, str), f"expected a text message, got {len(message)} bytes"
    return json.loads(message)


async def text_messages_until_close(connection: object) -> list[dict[str, object]]:
    """Every JSON message the server still sends until it closes the connection (binary ones skipped)."""
    import json

    from websockets.exceptions import ConnectionClosed

    messages: list[dict[str, object]] = []
    try:
        while True:
            message = await connection.recv()  # type: ignore[attr-defined]
            if isinstance(message, str):
                messages.append(json.loads(message))
    except ConnectionClosed:
        pass
    return messages
