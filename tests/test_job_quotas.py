"""Job quotas per API key and in total (jobs queued or running, bytes held), with 429 and Retry-After,
and DELETE /v1/jobs/{id}: on real servers, with Redis and in memory."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.client import AsyncVsodClient, VsodClient, VsodHTTPError
from tests.servers import (
    REDIS_URL,
    Server,
    delete_prefix,
    moving_square_frames,
    redis_keys,
    redis_prefix,
    running_server,
    write_clip,
)
from tests.test_clip_jobs import wait_for

KEYS = ("key-one-0123456789", "key-two-0123456789", "key-three-0123456789")
WAIT_S = 180  # an upper bound on a busy two-core machine, not a speed target


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return write_clip(tmp_path_factory.mktemp("quota") / "small.avi", moving_square_frames(4, seed=1)).read_bytes()


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory, small: bytes) -> bytes:
    data = write_clip(tmp_path_factory.mktemp("quota") / "big.avi", moving_square_frames(12, seed=2)).read_bytes()
    assert len(data) > 2 * len(small)
    return data


@pytest.fixture(scope="module", params=["memory", "redis"])
def quota_server(request: pytest.FixtureRequest, model_store_env: dict[str, str], small: bytes) -> Iterator[Server]:
    """No job worker, so uploads stay queued; two jobs a key, three in all, 2.5 small clips' bytes a key."""
    prefix = redis_prefix()
    store = {"redis_url": REDIS_URL, "redis_prefix": prefix} if request.param == "redis" else {}
    with running_server(model_store_env, job_workers=0, api_keys=",".join(KEYS), max_jobs_per_key=2, max_jobs=3,
                        max_job_bytes_per_key=int(2.5 * len(small)), max_job_bytes=100 * len(small), **store) as server:
        server.env["prefix"] = prefix if store else ""
        yield server
    if store:
        delete_prefix(prefix)


def upload(server: Server, key: str, data: bytes) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/clips", files={"file": ("clip.avi", data, "video/x-msvideo")},
                      headers={"X-API-Key": key})


def test_quotas_and_delete(quota_server: Server, small: bytes, big: bytes) -> None:
    one, two, three = KEYS
    first = upload(quota_server, one, small)
    second = upload(quota_server, one, small)
    assert first.status_code == second.status_code == 202, (first.text, second.text)

    refused = upload(quota_server, one, small)  # a third job for this key
    assert refused.status_code == 429, refused.text
    assert int(refused.headers["retry-after"]) > 0
    assert "this API key has 2 clip jobs queued or running" in refused.json()["detail"]

    other = upload(quota_server, two, small)
    assert other.status_code == 202, other.text
    full = upload(quota_server, three, small)  # a key with nothing yet, but the server holds three
    assert full.status_code == 429 and "the server has 3 clip jobs" in full.json()["detail"], full.text
    assert int(full.headers["retry-after"]) > 0

    # Owner isolation: another key cannot see or delete the job.
    job_id = first.json()["job_id"]
    assert httpx.delete(f"{quota_server.url}/v1/jobs/{job_id}", headers={"X-API-Key": two}).status_code == 404
    assert httpx.delete(f"{quota_server.url}/v1/jobs/{'0' * 32}", headers={"X-API-Key": one}).status_code == 404

    # Deleting a queued job frees its slot and its bytes at once.
    deleted = httpx.delete(f"{quota_server.url}/v1/jobs/{job_id}", headers={"X-API-Key": one})
    assert deleted.status_code == 204 and deleted.content == b""
    assert httpx.get(f"{quota_server.url}/v1/jobs/{job_id}", headers={"X-API-Key": one}).status_code == 404
    assert httpx.delete(f"{quota_server.url}/v1/jobs/{job_id}", headers={"X-API-Key": one}).status_code == 404
    if prefix := quota_server.env["prefix"]:
        assert not [key for key in redis_keys(prefix) if job_id in key]  # record, blobs, sizes: all gone
    assert upload(quota_server, three, small).status_code == 202  # the slot it held

    # Bytes: key three holds one small clip; a big one would pass its 2.5-small-clip limit.
    httpx.delete(f"{quota_server.url}/v1/jobs/{other.json()['job_id']}", headers={"X-API-Key": two})
    heavy = upload(quota_server, three, big)
    assert heavy.status_code == 429, heavy.text
    assert "this API key's clip jobs hold" in heavy.json()["detail"] and "DELETE /v1/jobs" in heavy.json()["detail"]
    assert int(heavy.headers["retry-after"]) > 0


@pytest.fixture(scope="module")
def working_server(model_store_env: dict[str, str]) -> Iterator[Server]:
    prefix = redis_prefix()
    with running_server(model_store_env, redis_url=REDIS_URL, redis_prefix=prefix, clip_chunk=2,
                        log_level="info") as server:
        server.env["prefix"] = prefix
        yield server
    delete_prefix(prefix)


def test_delete_stops_a_running_job_at_its_next_chunk(working_server: Server, tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "long.avi", moving_square_frames(300, seed=5))
    created = httpx.post(f"{working_server.url}/v1/clips", files={"file": ("long.avi", clip.read_bytes(), "video/x-msvideo")})
    assert created.status_code == 202, created.text
    job_id = created.json()["job_id"]
    deadline = time.monotonic() + WAIT_S
    while (status := httpx.get(f"{working_server.url}/v1/jobs/{job_id}").json())["frames_done"] < 4:
        assert status["status"] in ("queued", "running") and time.monotonic() < deadline, status
        time.sleep(0.1)
    assert httpx.delete(f"{working_server.url}/v1/jobs/{job_id}").status_code == 204
    prefix = working_server.env["prefix"]
    assert not [key for key in redis_keys(prefix) if job_id in key and ":lease" not in key]  # blobs freed at once

    stopped = f"job {job_id}: deleted while running; stopped after "
    while stopped not in working_server.output():
        assert time.monotonic() < deadline, working_server.output()[-2000:]
        time.sleep(0.1)
    frames = int(working_server.output().split(stopped)[1].split()[0])
    assert 4 <= frames < 300  # it stopped part-way, at a chunk boundary
    assert frames % 2 == 0
    time.sleep(1)
    assert not [key for key in redis_keys(prefix) if job_id in key]  # the worker left nothing behind
    assert httpx.get(f"{working_server.url}/v1/jobs/{job_id}").status_code == 404

    # The worker is free again: the next job runs to the end.
    short = write_clip(tmp_path / "short.avi", moving_square_frames(3, seed=6))
    after = httpx.post(f"{working_server.url}/v1/clips", files={"file": ("short.avi", short.read_bytes(), "video/x-msvideo")})
    assert wait_for(working_server, after.json()["job_id"])["status"] == "done"


def test_clients_wait_out_a_quota_and_delete_jobs(model_store_env: dict[str, str], tmp_path: Path) -> None:
    """The Python clients read Retry-After: without time to wait, a 429 is raised with it; given time,
    the upload is offered again once the server has room (here, when the key's first job is deleted)."""
    clip = write_clip(tmp_path / "clip.avi", moving_square_frames(4, seed=7))
    with running_server(model_store_env, job_workers=0, max_jobs_per_key=1) as server, VsodClient(server.url) as client:
        first = client.submit_clip(clip)["job_id"]
        with pytest.raises(VsodHTTPError) as refused:
            client.submit_clip(clip)
        assert refused.value.status == 429 and refused.value.retry_after is not None and refused.value.retry_after > 0

        threading.Timer(0.5, client.delete_job, [first]).start()  # room appears while the client waits
        began = time.monotonic()
        second = client.submit_clip(clip, wait_s=WAIT_S)["job_id"]
        assert second != first and time.monotonic() - began >= refused.value.retry_after * 0.9
        with pytest.raises(VsodHTTPError) as gone:
            client.job(first)
        assert gone.value.status == 404

        async def async_side() -> None:
            async with AsyncVsodClient(server.url) as aclient:
                with pytest.raises(VsodHTTPError) as again:
                    await aclient.submit_clip(clip)
                assert again.value.status == 429
                await aclient.delete_job(second)
                assert (await aclient.submit_clip(clip))["status"] == "queued"

        asyncio.run(async_side())
