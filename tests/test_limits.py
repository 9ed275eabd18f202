"""Input limits: header sizes read without decoding (decompression bombs), clip frames and duration,
upload size, media types, and the per-stream frame rate, each with its clear error, on a real server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import httpx
import numpy as np
import pytest

from service.limits import FrameRate, LimitExceeded, check_image, check_video, image_size, video_header
from service.video import VideoError
from tests.servers import (
    Server,
    jpeg_claiming,
    moving_square_frames,
    next_json,
    open_stream,
    png,
    png_claiming,
    running_server,
    text_messages_until_close,
    write_clip,
)

LIMITS = {"max_upload_bytes": 300_000, "max_frame_bytes": 200_000, "max_frame_side": 256, "max_clip_frames": 12,
          "max_clip_seconds": 1.5, "max_stream_fps": 1}


def encoded(ext: str, frame: np.ndarray, *params: int) -> bytes:
    ok, data = cv2.imencode(ext, cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), list(params))
    assert ok
    return data.tobytes()


# ---------------------------------------------------------------- headers, without a server


@pytest.mark.parametrize(("ext", "params", "kind"), [
    (".png", (), "png"), (".jpg", (), "jpeg"), (".jpg", (cv2.IMWRITE_JPEG_PROGRESSIVE, 1), "jpeg"), (".bmp", (), "bmp"),
    (".webp", (), "webp"), (".webp", (cv2.IMWRITE_WEBP_QUALITY, 101), "webp"),  # lossy and lossless
])
def test_image_size_from_the_header(ext: str, params: tuple[int, ...], kind: str) -> None:
    frame = moving_square_frames(1, 37, 53)[0]
    assert image_size(encoded(ext, frame, *params)) == (kind, 53, 37)


def test_bombs_are_refused_from_their_header() -> None:
    for bomb in (png_claiming(100_000, 100_000), jpeg_claiming(60_000, 60_000)):
        assert len(bomb) < 10_000
        with pytest.raises(LimitExceeded, match="the limit is 4096 pixels a side"):
            check_image(bomb, 4096)
    assert check_image(png_claiming(4096, 16), 4096) == (4096, 16)  # at the limit is fine


def test_formats_without_a_checked_header_are_not_images() -> None:
    frame = moving_square_frames(1, 16, 16)[0]
    # OpenCV would decode TIFF and PPM, but their headers are not checked, so they are refused.
    for data in (encoded(".tiff", frame), encoded(".ppm", frame), b"GIF89a\x10\x00\x10\x00", b"\xff\xd8\xff\xd9",
                 b"\x89PNG\r\n\x1a\n" + b"\0" * 40, png_claiming(0, 10)):
        with pytest.raises(VideoError, match="not a decodable image"):
            check_image(data, 4096)


def test_frame_rate_bucket() -> None:
    now = [0.0]
    rate = FrameRate(2, clock=lambda: now[0])  # 2 a second, bursts of 2
    assert [rate.allow() for _ in range(3)] == [True, True, False]
    now[0] = 0.5
    assert [rate.allow(), rate.allow()] == [True, False]
    now[0] = 10.0  # a long pause refills only up to the burst
    assert [rate.allow() for _ in range(3)] == [True, True, False]
    assert all(FrameRate(0).allow() for _ in range(100))  # 0: no limit


def test_video_header_and_limits(tmp_path: Path) -> None:
    header = video_header(write_clip(tmp_path / "a.mp4", moving_square_frames(8), fps=2))
    assert (header.width, header.height, header.frames, header.seconds) == (96, 72, 8, 4.0)
    check_video(header, 96, 8, 4.0)
    with pytest.raises(LimitExceeded, match="96x72; the limit is 90"):
        check_video(header, 90, 8, 4.0)
    with pytest.raises(LimitExceeded, match="8 frames; the limit is 7") as error:
        check_video(header, 96, 7, 4.0)
    assert error.value.code == "clip_too_long"
    with pytest.raises(LimitExceeded, match=r"lasts 4\.0 s; the limit is 3\.5 s"):
        check_video(header, 96, 8, 3.5)


# ---------------------------------------------------------------- on a real server


@pytest.fixture(scope="module")
def server(model_store_env: dict[str, str]) -> Iterator[Server]:
    with running_server(model_store_env, **LIMITS) as running:
        yield running


@pytest.mark.parametrize(("body", "content_type", "status", "detail"), [
    (png_claiming(100_000, 100_000), "image/png", 413, "100000x100000; the limit is 256 pixels a side"),
    (jpeg_claiming(300, 20), "image/jpeg", 413, "300x20; the limit is 256"),
    (b"\0" * 200_001, "image/png", 413, "limit of 200000 bytes"),
    (b"II*\0" + b"\0" * 100, "image/png", 400, "not a decodable image"),  # a TIFF header
    (b"hello", "text/plain", 415, "unsupported media type"),
], ids=["png-bomb", "jpeg-too-wide", "too-many-bytes", "tiff", "text"])
def test_image_limits(server: Server, body: bytes, content_type: str, status: int, detail: str) -> None:
    response = httpx.post(f"{server.url}/v1/images", content=body, headers={"content-type": content_type}, timeout=60)
    assert response.status_code == status and detail in response.json()["detail"], response.text


def _clip_mkv(path: Path, count: int, fps: int) -> Path:
    """Matroska records no frame count, so only decoding finds out how many frames it has."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mjpeg", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 96, 72, "yuvj420p"
        for frame in moving_square_frames(count):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def test_clip_limits(server: Server, tmp_path: Path) -> None:
    def upload(path: Path, kind: str = "video/mp4") -> httpx.Response:
        return httpx.post(f"{server.url}/v1/clips", files={"file": (path.name, path.read_bytes(), kind)}, timeout=60)

    cases = [
        (write_clip(tmp_path / "long.mp4", moving_square_frames(13), fps=10), "13 frames; the limit is 12"),
        (write_clip(tmp_path / "slow.mp4", moving_square_frames(4), fps=2), "lasts 2.0 s; the limit is 1.5 s"),
        (write_clip(tmp_path / "wide.mp4", moving_square_frames(2, 72, 300), fps=10), "300x72; the limit is 256"),
    ]
    for path, detail in cases:
        response = upload(path)
        assert response.status_code == 413 and detail in response.json()["detail"], response.text
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0" * 300_001)
    response = upload(big)
    assert response.status_code == 413 and "limit of 300000 bytes" in response.json()["detail"]
    response = upload(tmp_path / "long.mp4", "text/plain")
    assert response.status_code == 415 and "unsupported media type" in response.json()["detail"]

    # A container that does not say how many frames it holds is accepted, then the job stops at the limit.
    ok = upload(write_clip(tmp_path / "ok.mp4", moving_square_frames(12), fps=10))
    uncounted = upload(_clip_mkv(tmp_path / "uncounted.mkv", 14, fps=20), "video/x-matroska")
    assert ok.status_code == uncounted.status_code == 202, uncounted.text
    statuses = [_wait(server, response.json()["job_id"]) for response in (ok, uncounted)]
    assert statuses[0]["status"] == "done" and statuses[0]["frames_done"] == 12
    assert statuses[1]["status"] == "failed" and "more than 12 frames" in statuses[1]["error"]


def _wait(server: Server, job_id: str) -> dict:
    import time

    deadline = time.monotonic() + 180  # a bound for a busy machine, not a speed target
    while time.monotonic() < deadline:
        status = httpx.get(f"{server.url}/v1/jobs/{job_id}").json()
        if status["status"] in ("done", "failed"):
            return status
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} not finished: {status}")


def test_stream_limits(server: Server) -> None:
    """Bombs and oversized frames get errors; frames over VSOD_MAX_STREAM_FPS are dropped unread and
    counted, so every frame sent is either answered or in `dropped`."""
    frames = [png(frame) for frame in moving_square_frames(40, seed=2)]

    async def main() -> tuple[list[dict], list[dict]]:
        connection, _ = await open_stream(server.ws_url)
        errors = []
        for bomb in (png_claiming(100_000, 100_000), jpeg_claiming(300, 20), b"\xff\xd8" + b"\0" * 200_001):
            await connection.send(bomb)
            errors.append(await next_json(connection))
        for data in frames[:-1]:  # 39 frames at once; one a second is allowed
            await connection.send(data)
        # A frame over the limit is never answered, so its count shows in the next answered frame's
        # `dropped`: one more frame once the bucket has refilled reports them all.
        await asyncio.sleep(1.2)
        await connection.send(frames[-1])
        await connection.send(json.dumps({"type": "close"}))
        headers = await text_messages_until_close(connection)
        return errors, headers

    errors, headers = asyncio.run(main())
    assert [e["code"] for e in errors] == ["frame_too_large"] * 3
    assert "100000x100000" in errors[0]["message"] and "200000" in errors[2]["message"]
    assert all(h["type"] == "mask" for h in headers) and headers
    assert len(headers) + headers[-1]["dropped"] == 40
    metrics = httpx.get(f"{server.url}/metrics").text
    limited = next(float(line.split()[-1]) for line in metrics.splitlines()
                   if line.startswith("vsod_rate_limited_frames_total"))
    assert 0 < limited <= headers[-1]["dropped"]


def test_bad_limit_settings_fail_on_one_line(model_store_env: dict[str, str]) -> None:
    import os
    import subprocess
    import sys

    from tests.servers import REPO

    env = {**os.environ, **model_store_env, "VSOD_MAX_FRAME_SIDE": "0", "VSOD_MAX_STREAM_FPS": "-1",
           "VSOD_API_KEYS": "secret-key"}
    done = subprocess.run([sys.executable, "-m", "service.cli", "serve", "--port", "70000"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    for name in ("--port (VSOD_PORT)", "VSOD_MAX_FRAME_SIDE", "VSOD_MAX_STREAM_FPS"):  # a flag named as typed
        assert name in done.stderr
    assert "secret-key" not in done.stderr


@pytest.mark.parametrize(("old", "new"), [("VSOD_TORCH_THREADS", "VSOD_THREADS"), ("VSOD_OPTIMIZE", "VSOD_BACKEND")])
def test_a_renamed_setting_is_refused_with_its_new_name(old: str, new: str, model_store_env: dict[str, str]) -> None:
    """An old deployment's variable would otherwise be ignored without a word: one line, exit 1."""
    import os
    import subprocess
    import sys

    from tests.servers import REPO

    env = {**os.environ, **model_store_env, old: "1"}
    done = subprocess.run([sys.executable, "-m", "service.cli", "serve", "--port", "0"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert f"{old} is no longer read: use {new}" in done.stderr
