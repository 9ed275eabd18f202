"""Clip jobs on real servers (Redis and in-memory): upload -> job -> zip equal to `vsod predict`,
npz and mp4 results, bad uploads, and jobs whose worker died being requeued or failed."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
import redis.asyncio as aioredis

from service.job_store import JobRecord, new_job_id
from service.job_store_redis import RedisJobStore
from service.video import open_media
from tests.servers import (
    REDIS_URL,
    REPO,
    Server,
    decode_png_mask,
    delete_prefix,
    moving_square_frames,
    redis_keys,
    redis_prefix,
    running_server,
    write_clip,
)

LEASE_S = 1.5  # short, so a dead worker's job is noticed quickly
SETTINGS = {"max_upload_bytes": 2_000_000, "job_lease_s": LEASE_S, "job_max_attempts": 2}
WAIT_S = 180  # an upper bound for a job on a busy two-core machine, not a speed target


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clips") / "walk.mp4", moving_square_frames(20, seed=4))


@pytest.fixture(scope="module")
def predicted(clip: Path, model_store_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    """`vsod predict` on the same file: the masks a job must reproduce."""
    out = tmp_path_factory.mktemp("predicted")
    env = {**os.environ, **model_store_env, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-m", "service.cli", "predict", str(clip), "--out", str(out), "--quiet"],
                   env=env, check=True, capture_output=True)
    files = sorted(out.glob("*.png"))
    assert [f.name for f in files] == [f"{i:05d}.png" for i in range(20)]
    return [decode_png_mask(f.read_bytes()) for f in files]


@pytest.fixture(scope="module")
def redis_server(model_store_env: dict[str, str]) -> Iterator[Server]:
    prefix = redis_prefix()
    with running_server(model_store_env, redis_url=REDIS_URL, redis_prefix=prefix, **SETTINGS) as server:
        server.env["prefix"] = prefix
        yield server
    delete_prefix(prefix)


@pytest.fixture(scope="module")
def memory_server(model_store_env: dict[str, str]) -> Iterator[Server]:
    with running_server(model_store_env, **SETTINGS) as server:
        yield server


@pytest.fixture(params=["memory", "redis"])
def server(request: pytest.FixtureRequest) -> Server:
    return request.getfixturevalue(f"{request.param}_server")


def wait_for(server: Server, job_id: str, statuses: tuple[str, ...] = ("done", "failed")) -> dict:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        status = httpx.get(f"{server.url}/v1/jobs/{job_id}").json()
        if status["status"] in statuses:
            return status
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {status} after {WAIT_S} s")


def zip_masks(data: bytes) -> tuple[list[str], list[np.ndarray]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = sorted(archive.namelist())
        return names, [decode_png_mask(archive.read(name)) for name in names]


def test_clip_to_zip_equals_vsod_predict(server: Server, clip: Path, predicted: list[np.ndarray]) -> None:
    with clip.open("rb") as handle:
        response = httpx.post(f"{server.url}/v1/clips", files={"file": (clip.name, handle, "video/mp4")})
    assert response.status_code == 202, response.text
    created = response.json()
    job_id = created["job_id"]
    assert response.headers["location"] == created["status_url"] == f"/v1/jobs/{job_id}"
    assert created["status"] == "queued" and created["frames_total"] == 20
    status = wait_for(server, job_id)
    assert status["status"] == "done", status
    assert status["frames_done"] == status["frames_total"] == 20 and status["attempts"] == 1
    assert (status["width"], status["height"], status["fps"]) == (96, 72, 10.0) and status["error"] is None
    assert status["model_id"].startswith("test-student@")

    result = httpx.get(f"{server.url}{created['result_url']}")
    assert result.status_code == 200 and result.headers["content-type"] == "application/zip"
    assert 'filename="walk_masks.zip"' in result.headers["content-disposition"]
    names, masks = zip_masks(result.content)
    assert names == [f"{i:05d}.png" for i in range(20)]
    for got, expected in zip(masks, predicted, strict=True):  # the same frames through the same chunked clip path
        assert np.array_equal(got, expected)

    npz = httpx.get(f"{server.url}/v1/jobs/{job_id}/result", params={"format": "npz"})
    array = np.load(io.BytesIO(npz.content))["masks"]
    assert array.dtype == np.uint8 and array.shape == (20, 72, 96) and np.array_equal(array, np.stack(masks))

    mp4 = httpx.get(f"{server.url}/v1/jobs/{job_id}/result", params={"format": "mp4"})
    assert mp4.status_code == 200 and mp4.headers["content-type"] == "video/mp4"
    path = clip.parent / f"{job_id}.mp4"
    path.write_bytes(mp4.content)
    with open_media(path) as video:
        frames = [frame for _, frame in video.frames()]
    assert len(frames) == 20 and frames[0].shape == (72, 96, 3)
    # Lossy H.264 of the masks: close to them, not equal.
    assert np.mean([np.abs(f[..., 0].astype(int) - m).mean() for f, m in zip(frames, masks, strict=True)]) < 8


def test_raw_video_body(redis_server: Server, tmp_path: Path) -> None:
    avi = write_clip(tmp_path / "short.avi", moving_square_frames(5, seed=6))
    response = httpx.post(f"{redis_server.url}/v1/clips", content=avi.read_bytes(),
                          headers={"content-type": "video/x-msvideo"})
    assert response.status_code == 202, response.text
    status = wait_for(redis_server, response.json()["job_id"])
    assert status["status"] == "done" and status["frames_done"] == 5 and status["filename"] == "upload.avi"


def test_animated_gif_upload(server: Server, tmp_path: Path) -> None:
    write_clip(tmp_path / "anim.gif", moving_square_frames(6, seed=7))
    response = httpx.post(f"{server.url}/v1/clips",
                          files={"file": ("anim.gif", (tmp_path / "anim.gif").read_bytes(), "image/gif")})
    assert response.status_code == 202, response.text
    status = wait_for(server, response.json()["job_id"])
    assert status["status"] == "done" and status["frames_done"] == status["frames_total"] == 6, status


@pytest.mark.parametrize(
    ("request_kwargs", "status", "detail"),
    [
        ({"files": {"file": ("notes.txt", b"hello", "text/plain")}}, 415, "unsupported media type"),
        ({"files": {"file": ("clip.bin", b"\0" * 100, "application/octet-stream")}}, 415, "unsupported media type"),
        ({"content": b"\x89PNG....", "headers": {"content-type": "image/png"}}, 415, "unsupported media type"),
        ({"files": {"file": ("clip.mp4", b"definitely not a video" * 10, "video/mp4")}}, 400, "cannot open video"),
        ({"files": {"file": ("clip.mp4", b"", "video/mp4")}}, 400, "empty"),
        ({"files": {"file": ("clip.mp4", b"\0" * 2_100_000, "video/mp4")}}, 413, "limit"),
        ({"files": {"video": ("clip.mp4", b"\0" * 10, "video/mp4")}}, 400, "'file' field"),
    ],
    ids=["text", "unknown-suffix", "image", "not-a-video", "empty", "too-large", "no-file-field"],
)
def test_bad_uploads(server: Server, request_kwargs: dict, status: int, detail: str) -> None:
    response = httpx.post(f"{server.url}/v1/clips", **request_kwargs)
    assert response.status_code == status, response.text
    assert detail in response.json()["detail"]


def _plant_orphan(prefix: str, clip: Path, attempts: int) -> str:
    """A job as a worker that died mid-way leaves it: running, in the running list, lease about to lapse."""
    job_id = new_job_id()

    async def main() -> None:
        client = aioredis.Redis.from_url(REDIS_URL)
        store = RedisJobStore(client, prefix, ttl_s=600)
        await store.admit(JobRecord(job_id, clip.name, clip.stat().st_size, status="running", attempts=attempts,
                                    frames_done=7, frames_total=20))
        await store.put_blob(job_id, "input", clip)
        await client.lpush(store.running_key, job_id)
        await client.set(store.key(job_id, "lease"), "a-worker-that-will-die", px=int(LEASE_S * 1000) + 500)
        await client.aclose()

    asyncio.run(main())
    return job_id


def test_job_of_a_dead_worker_is_requeued_and_finishes(redis_server: Server, clip: Path, predicted: list[np.ndarray]) -> None:
    job_id = _plant_orphan(redis_server.env["prefix"], clip, attempts=1)
    early = httpx.get(f"{redis_server.url}/v1/jobs/{job_id}/result")
    assert early.status_code == 409 and "running (7/20 frames)" in early.json()["detail"]
    status = wait_for(redis_server, job_id)  # the lease lapses, the reaper requeues, this server runs it
    assert status["status"] == "done" and status["attempts"] == 2 and status["frames_done"] == 20
    _, masks = zip_masks(httpx.get(f"{redis_server.url}/v1/jobs/{job_id}/result").content)
    assert all(np.array_equal(got, expected) for got, expected in zip(masks, predicted, strict=True))


def test_job_whose_workers_keep_dying_fails(redis_server: Server, clip: Path) -> None:
    prefix = redis_server.env["prefix"]
    job_id = _plant_orphan(prefix, clip, attempts=2)
    status = wait_for(redis_server, job_id)
    assert status["status"] == "failed" and "worker died" in status["error"]
    response = httpx.get(f"{redis_server.url}/v1/jobs/{job_id}/result")
    assert response.status_code == 409 and "failed" in response.json()["detail"]
    assert f"{prefix}:job:{job_id}:input" not in redis_keys(prefix)  # nothing left to process


def test_every_redis_key_has_a_ttl(redis_server: Server) -> None:
    prefix = redis_server.env["prefix"]
    keys = redis_keys(prefix)
    assert any(":job:" in key for key in keys)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        assert all(client.pttl(key) > 0 for key in keys), {key: client.pttl(key) for key in keys}
    finally:
        client.close()
