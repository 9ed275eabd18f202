"""The session store (Redis and in-memory, same tests) and sessions over the API: TTL, info, delete."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import redis.asyncio as aioredis

from service.live import MemorySessionStore, RedisSessionStore, SessionState, SessionStore
from tests.servers import (
    REDIS_URL,
    Server,
    delete_prefix,
    max_diff,
    moving_square_frames,
    open_stream,
    png,
    redis_keys,
    redis_prefix,
    running_server,
    send_and_receive,
)

TTL_S = 1.5  # short, so expiry is seen quickly; not a speed assertion


def record(session_id: str, frame: int = 3, model_id: str = "m@abc") -> tuple[str, SessionState]:
    features = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)
    now = time.time()
    return session_id, SessionState(model_id, (64, 64), frame, {"features": features}, now - 5, now, dropped=2)


async def _cache(kind: str, ttl_s: float, prefix: str) -> tuple[SessionStore, aioredis.Redis | None]:
    if kind == "memory":
        return MemorySessionStore(ttl_s), None
    client = aioredis.Redis.from_url(REDIS_URL)
    return RedisSessionStore(client, prefix, ttl_s), client


@pytest.fixture(params=["memory", "redis"])
def cache_kind(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    prefix = redis_prefix()
    yield request.param, prefix
    delete_prefix(prefix)


def run_with_cache(cache_kind: tuple[str, str], ttl_s: float, body) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        cache, client = await _cache(cache_kind[0], ttl_s, cache_kind[1])
        try:
            await body(cache)
        finally:
            if client is not None:
                await client.aclose()

    asyncio.run(main())


def test_round_trip_batch_and_delete(cache_kind: tuple[str, str]) -> None:
    async def body(cache: SessionStore) -> None:
        a, b = record("a", 3), record("b", 7)
        await cache.put_many([a, b])
        got = await cache.get_many(["b", "missing", "a"])
        assert got[1] is None
        # arrays, counters and times survive the round trip
        assert got[0].to_bytes() == b[1].to_bytes() and got[2].to_bytes() == a[1].to_bytes()  # type: ignore[union-attr]
        assert got[0].frame == 7 and np.array_equal(got[0].carried["features"], b[1].carried["features"])  # type: ignore[union-attr]
        assert await cache.delete("a") is True
        assert await cache.delete("a") is False
        assert await cache.get("a") is None and (await cache.get("b")).to_bytes() == b[1].to_bytes()  # type: ignore[union-attr]

    run_with_cache(cache_kind, 60, body)


def test_ttl_expires_and_use_refreshes_it(cache_kind: tuple[str, str]) -> None:
    async def body(cache: SessionStore) -> None:
        await cache.put_many([record("used"), record("idle"), record("peeked")])
        remaining = await cache.expires_in("used")
        assert remaining is not None and 0 < remaining <= 2.0
        await asyncio.sleep(0.6)
        assert await cache.get("peeked", refresh=False) is not None  # looked at, not used
        for _ in range(3):  # reads within the TTL keep "used" alive past its first expiry
            assert await cache.get("used") is not None
            await asyncio.sleep(0.6)
        # ~2.4 s after the writes: the untouched and the merely peeked records are gone.
        assert await cache.get("idle") is None and await cache.expires_in("idle") is None
        assert await cache.get("peeked", refresh=False) is None
        assert await cache.get("used", refresh=False) is not None
        await asyncio.sleep(2.1)
        assert await cache.get("used") is None  # and with no more use it expires too

    run_with_cache(cache_kind, 2.0, body)


def test_unreadable_bytes_are_no_session(cache_kind: tuple[str, str]) -> None:
    async def body(cache: SessionStore) -> None:
        if isinstance(cache, RedisSessionStore):
            await cache.client.set(cache.key("junk"), b"not a record", px=60_000)
        else:
            cache._data["junk"] = (time.monotonic() + 60, b"not a record")
        assert await cache.get("junk") is None

    run_with_cache(cache_kind, 60, body)


def test_redis_keys_are_namespaced_and_expire() -> None:
    prefix = redis_prefix()

    async def main() -> None:
        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            await RedisSessionStore(client, prefix, 60).put(*record("s1"))
            assert redis_keys(prefix) == [f"{prefix}:session:s1"]
            assert 0 < await client.pttl(f"{prefix}:session:s1") <= 60_000
        finally:
            await client.aclose()

    try:
        asyncio.run(main())
    finally:
        delete_prefix(prefix)


# ---------------------------------------------------------------- over the API, both backends


@pytest.fixture(scope="module", params=["memory", "redis"])
def server(request: pytest.FixtureRequest, model_store_env: dict[str, str]) -> Iterator[Server]:
    settings: dict[str, object] = {"session_ttl_s": TTL_S}
    prefix = redis_prefix()
    if request.param == "redis":
        settings.update(redis_url=REDIS_URL, redis_prefix=prefix)
    with running_server(model_store_env, **settings) as running:
        running.env["prefix"] = prefix
        running.env["backend"] = request.param
        yield running
    delete_prefix(prefix)


def stream_some(server: Server, count: int, session_id: str | None = None) -> tuple[dict[str, object], list[dict[str, object]]]:
    frames = moving_square_frames(count)

    async def main() -> tuple[dict[str, object], list[dict[str, object]]]:
        connection, hello = await open_stream(server.ws_url, session_id)
        headers = [(await send_and_receive(connection, png(frame)))[0] for frame in frames]
        await connection.close()
        return hello, headers

    return asyncio.run(main())


def test_session_info_delete_and_expiry(server: Server) -> None:
    hello, headers = stream_some(server, 3)
    session_id = hello["session_id"]
    assert hello["frame"] == 0 and [h["frame"] for h in headers] == [0, 1, 2]
    info = httpx.get(f"{server.url}/v1/sessions/{session_id}").json()
    assert info["session_id"] == session_id and info["frame"] == 3 and info["dropped"] == 0
    assert info["model_id"].startswith("test-student@")
    assert info["age_s"] >= info["idle_s"] >= 0 and 0 < info["expires_in_s"] <= TTL_S

    # Deleted: gone, and a reconnect starts over at frame 0.
    assert httpx.delete(f"{server.url}/v1/sessions/{session_id}").status_code == 204
    assert httpx.get(f"{server.url}/v1/sessions/{session_id}").status_code == 404
    assert httpx.delete(f"{server.url}/v1/sessions/{session_id}").status_code == 404
    hello, headers = stream_some(server, 2, session_id)
    assert hello["frame"] == 0 and [h["frame"] for h in headers] == [0, 1]

    # Expired: after the TTL with no use the state is gone; a reconnect starts over at frame 0.
    time.sleep(TTL_S + 0.5)
    response = httpx.get(f"{server.url}/v1/sessions/{session_id}")
    assert response.status_code == 404 and "idle for over" in response.json()["detail"]
    hello, _ = stream_some(server, 1, session_id)
    assert hello["frame"] == 0
    if server.env["backend"] == "redis":
        assert redis_keys(server.env["prefix"]) == [f"{server.env['prefix']}:session:{session_id}"]


def test_state_expiring_mid_stream_is_flagged(server: Server) -> None:
    frames = moving_square_frames(3)

    async def main() -> list[dict[str, object]]:
        connection, _hello = await open_stream(server.ws_url)
        first, _ = await send_and_receive(connection, png(frames[0]))
        await asyncio.sleep(TTL_S + 0.5)  # the open connection does not keep the state alive by itself
        second, _ = await send_and_receive(connection, png(frames[1]))
        third, _ = await send_and_receive(connection, png(frames[2]))
        await connection.close()
        return [first, second, third]

    first, second, third = asyncio.run(main())
    assert first["frame"] == 0 and "restarted" not in first
    assert second["frame"] == 0 and "expired" in second["restarted"]
    assert third["frame"] == 1 and "restarted" not in third


def test_unknown_and_malformed_session_ids_are_404(server: Server) -> None:
    for session_id in ("never-seen", "x" * 200, "bad%20id"):
        response = httpx.get(f"{server.url}/v1/sessions/{session_id}")
        assert response.status_code == 404 and response.json()["detail"]
        assert httpx.delete(f"{server.url}/v1/sessions/{session_id}").status_code == 404


@pytest.mark.parametrize("server", ["redis"], indirect=True)  # only Redis can be seeded from outside the server
def test_state_of_another_model_is_refused_and_restarts(server: Server, model_store) -> None:  # type: ignore[no-untyped-def]
    prefix = server.env["prefix"]
    stale = record("stale", frame=9, model_id="other-model@0123456789ab")

    async def seed() -> None:
        client = aioredis.Redis.from_url(REDIS_URL)
        await RedisSessionStore(client, prefix, 60).put(*stale)
        await client.aclose()

    asyncio.run(seed())
    frames = moving_square_frames(2)

    async def main() -> tuple[dict[str, object], list[dict[str, object]], list[bytes]]:
        connection, hello = await open_stream(server.ws_url, "stale")
        pairs = [await send_and_receive(connection, png(frame)) for frame in frames]
        await connection.close()
        return hello, [p[0] for p in pairs], [p[1] for p in pairs]

    hello, headers, masks = asyncio.run(main())
    info = httpx.get(f"{server.url}/v1/sessions/stale").json()  # before the TTL runs out
    assert info["frame"] == 2 and info["model_id"].startswith("test-student@")
    assert hello["frame"] == 0 and "other-model" in hello["restarted"]
    assert [h["frame"] for h in headers] == [0, 1]
    # The fresh context gives the offline path's masks.
    from service.model import Predictor
    from tests.servers import decode_png_mask

    predictor = Predictor(*model_store.load("test-student"), device="cpu")
    for got, expected in zip(masks, predictor.predict_clip(frames), strict=True):
        assert max_diff(decode_png_mask(got), expected) <= 1
