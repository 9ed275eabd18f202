"""Clip jobs under faults, on real servers: a hanging Redis fails job requests within
VSOD_REDIS_TIMEOUT_S, spool folders of killed servers are reaped at start, and a job that fails
part-way keeps the masks it made."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.spool import OWNER, PREFIX, process_start, reap_stale_spools
from tests.servers import encode_clip, moving_square_frames, running_server, write_clip
from tests.test_clip_jobs import wait_for
from tests.test_faults import RedisProcess

TIMEOUT_S = 0.5
SOCKET_TIMEOUT_S = 10  # the Redis client's socket timeout, which bounded job calls before


@pytest.fixture()
def redis_process() -> Iterator[RedisProcess]:
    if shutil.which("redis-server") is None:
        pytest.skip("needs the redis-server binary")
    process = RedisProcess()
    process.start()
    yield process
    if process.process is not None:
        process.process.send_signal(signal.SIGCONT)
    process.stop()
    shutil.rmtree(process.dir, ignore_errors=True)


def test_a_hanging_redis_fails_job_requests_within_the_timeout(model_store_env: dict[str, str], tmp_path: Path,
                                                                 redis_process: RedisProcess) -> None:
    clip = write_clip(tmp_path / "walk.avi", moving_square_frames(3, seed=1)).read_bytes()
    with running_server(model_store_env, redis_url=redis_process.url, redis_timeout_s=TIMEOUT_S, job_workers=0) as server:
        created = httpx.post(f"{server.url}/v1/clips", files={"file": ("walk.avi", clip, "video/x-msvideo")})
        assert created.status_code == 202, created.text
        job = f"{server.url}/v1/jobs/{created.json()['job_id']}"
        assert redis_process.process is not None
        redis_process.process.send_signal(signal.SIGSTOP)  # Redis hangs: connections open, no answers
        try:
            for method, url, kwargs in (("GET", job, {}), ("GET", f"{job}/result", {}), ("DELETE", job, {}),
                                        ("POST", f"{server.url}/v1/clips",
                                         {"files": {"file": ("walk.avi", clip, "video/x-msvideo")}})):
                began = time.monotonic()
                response = httpx.request(method, url, timeout=60, **kwargs)
                took = time.monotonic() - began
                assert response.status_code == 503, (method, url, response.text)
                assert f"no answer within {TIMEOUT_S:g} s" in response.json()["detail"]
                # Bounded by the setting, well before the client's socket timeout would have ended it.
                assert took < SOCKET_TIMEOUT_S / 2, (method, url, took)
        finally:
            redis_process.process.send_signal(signal.SIGCONT)
        assert httpx.get(job).status_code == 200  # and it recovers with Redis


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _spool(parent: Path, name: str, owner: str | None) -> Path:
    spool = parent / f"{PREFIX}{name}"
    (spool / "job-x").mkdir(parents=True)
    (spool / "job-x" / "input").write_bytes(b"left behind")
    if owner is not None:
        (spool / OWNER).write_text(owner)
    return spool


def test_only_spools_of_gone_processes_are_reaped(tmp_path: Path) -> None:
    me = os.getpid()
    dead = _spool(tmp_path, "dead", f"{_dead_pid()} 12345\n")
    reused = _spool(tmp_path, "reused", f"{me} {int(process_start(me) or 0) + 1}\n")  # same pid, another process
    alive = _spool(tmp_path, "alive", f"{me} {process_start(me)}\n")
    unowned = _spool(tmp_path, "unowned", None)  # being made, or from an older version: not ours to judge
    other = tmp_path / "someone-else"
    other.mkdir()
    assert sorted(reap_stale_spools(tmp_path)) == sorted([dead, reused])
    assert not dead.exists() and not reused.exists()
    assert alive.exists() and unowned.exists() and other.exists()


def test_a_server_reaps_stale_spools_at_start(model_store_env: dict[str, str]) -> None:
    stale = _spool(Path(tempfile.gettempdir()), f"stale-{os.getpid()}", f"{_dead_pid()} 1\n")
    try:
        with running_server(model_store_env, job_workers=0) as server:
            assert not stale.exists()
            own = [p for p in Path(tempfile.gettempdir()).glob(f"{PREFIX}*")
                   if (p / OWNER).exists() and (p / OWNER).read_text().split()[0] == str(server.process.pid)]
            assert len(own) == 1  # its own spool names its owner, so a later server can judge it
        assert not own[0].exists()  # removed at a clean shutdown
    finally:
        shutil.rmtree(stale, ignore_errors=True)


def mkv_without_frame_count(path: Path, count: int) -> Path:
    """A Matroska clip: its header states no frame count, so only decoding finds how long it is."""
    return encode_clip(path, moving_square_frames(count, seed=7), "mpeg4", rate=10)


def test_a_job_that_fails_part_way_keeps_its_masks(model_store_env: dict[str, str], tmp_path: Path) -> None:
    clip = mkv_without_frame_count(tmp_path / "long.mkv", 20)
    with running_server(model_store_env, max_clip_frames=10, clip_chunk=4) as server:
        created = httpx.post(f"{server.url}/v1/clips", files={"file": ("long.mkv", clip.read_bytes(), "video/x-matroska")})
        assert created.status_code == 202, created.text
        job_id = created.json()["job_id"]
        status = wait_for(server, job_id)
        assert status["status"] == "failed" and "more than 10 frames" in status["error"], status
        assert status["frames_done"] == 8  # two chunks of four; the third would pass the limit

        result = httpx.get(f"{server.url}/v1/jobs/{job_id}/result")
        assert result.status_code == 200, result.text
        assert result.headers["x-job-status"] == "failed" and result.headers["x-frames"] == "8"
        with zipfile.ZipFile(io.BytesIO(result.content)) as archive:
            assert sorted(archive.namelist()) == [f"{i:05d}.png" for i in range(8)]
        npz = httpx.get(f"{server.url}/v1/jobs/{job_id}/result", params={"format": "npz"})
        with np.load(io.BytesIO(npz.content)) as archive:
            assert archive["masks"].shape == (8, 72, 96)
