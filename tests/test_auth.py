"""API keys on a real server with Redis: 401/403, public health and page, and sessions and jobs that
belong to the key that made them (another key gets 404), stored under a hash of the key, never the key."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from service.auth import ApiKeys, AuthError, owner_id
from tests.servers import (
    REDIS_URL,
    Server,
    delete_prefix,
    moving_square_frames,
    png,
    redis_keys,
    redis_prefix,
    running_server,
    send_and_receive,
    write_clip,
)

ALPHA, BETA = f"alpha-{uuid.uuid4().hex}", f"beta-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def server(model_store_env: dict[str, str]) -> Iterator[Server]:
    prefix = redis_prefix()
    with running_server(model_store_env, redis_url=REDIS_URL, redis_prefix=prefix, api_keys=f"{ALPHA}, {BETA}") as running:
        running.env["prefix"] = prefix
        yield running
    delete_prefix(prefix)


def as_key(key: str | None) -> dict[str, str]:
    return {"X-API-Key": key} if key else {}


def test_key_set_parsing() -> None:
    keys = ApiKeys.from_setting(" one,two  three ,,")
    assert len(keys) == 3 and keys.owner("two") == owner_id("two") and len(owner_id("two")) == 32
    with pytest.raises(AuthError) as missing:
        keys.owner(None)
    with pytest.raises(AuthError) as unknown:
        keys.owner("four")
    assert (missing.value.status, unknown.value.status) == (401, 403)
    assert ApiKeys.from_setting("").owner(None) == ""  # no keys: open, everything owned by ""


def test_public_and_protected_routes(server: Server) -> None:
    for path in ("/healthz", "/readyz", "/docs", "/openapi.json"):
        assert httpx.get(server.url + path).status_code == 200, path
    assert httpx.get(server.url + "/").status_code not in (401, 403)  # the page loads without a key
    for path in ("/v1/models", "/metrics", "/v1/sessions/any", "/v1/jobs/0123456789abcdef0123456789abcdef"):
        missing = httpx.get(server.url + path)
        assert missing.status_code == 401 and "X-API-Key" in missing.json()["detail"], path
        assert missing.headers["www-authenticate"].startswith("ApiKey")
        wrong = httpx.get(server.url + path, headers=as_key("not-a-key"))
        assert wrong.status_code == 403 and "not valid" in wrong.json()["detail"], path
    assert httpx.get(server.url + "/v1/models", headers=as_key(BETA)).status_code == 200
    assert httpx.get(server.url + "/metrics", headers=as_key(ALPHA)).status_code == 200
    image = png(moving_square_frames(1)[0])
    assert httpx.post(server.url + "/v1/images", content=image, headers={"content-type": "image/png"}).status_code == 401
    response = httpx.post(server.url + "/v1/images", content=image, headers={"content-type": "image/png", **as_key(ALPHA)})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    spec = httpx.get(server.url + "/openapi.json").json()
    assert spec["components"]["securitySchemes"]["ApiKey"] == {
        "type": "apiKey", "in": "header", "name": "X-API-Key",
        "description": spec["components"]["securitySchemes"]["ApiKey"]["description"]}


async def _refused(url: str, headers: dict[str, str] | None = None) -> tuple[dict, int | None]:
    connection = await connect(url, additional_headers=headers)
    error = json.loads(await connection.recv())
    with pytest.raises(ConnectionClosed):
        await connection.recv()
    return error, connection.close_code


def test_stream_needs_a_key(server: Server) -> None:
    missing, code_missing = asyncio.run(_refused(f"{server.ws_url}/v1/stream"))
    wrong, code_wrong = asyncio.run(_refused(f"{server.ws_url}/v1/stream?api_key=nope"))
    assert (missing["code"], code_missing) == ("unauthorized", 1008) and "api_key" in missing["message"]
    assert (wrong["code"], code_wrong) == ("forbidden", 1008)


def stream(server: Server, key: str, count: int, session_id: str | None = None, header: bool = True) -> tuple[dict, list[dict]]:
    async def main() -> tuple[dict, list[dict]]:
        query = [f"session_id={session_id}"] if session_id else []
        if not header:  # the browser's way: WebSocket requests cannot carry custom headers there
            query.append(f"api_key={key}")
        url = f"{server.ws_url}/v1/stream" + ("?" + "&".join(query) if query else "")
        connection = await connect(url, additional_headers=as_key(key) if header else None)
        hello = json.loads(await connection.recv())
        headers = [(await send_and_receive(connection, png(f)))[0] for f in moving_square_frames(count)]
        await connection.close()
        return hello, headers

    return asyncio.run(main())


def test_sessions_belong_to_their_key(server: Server) -> None:
    prefix = server.env["prefix"]
    hello, headers = stream(server, ALPHA, 3, "cam")
    assert hello["session_id"] == "cam" and [h["frame"] for h in headers] == [0, 1, 2]
    url = f"{server.url}/v1/sessions/cam"
    assert httpx.get(url, headers=as_key(ALPHA)).json()["frame"] == 3
    assert httpx.get(url, headers=as_key(BETA)).status_code == 404  # as if it did not exist
    assert httpx.delete(url, headers=as_key(BETA)).status_code == 404
    assert httpx.get(url, headers=as_key(ALPHA)).status_code == 200  # still there

    # The same name under another key is another session: it starts at 0 and leaves alpha's alone.
    hello, headers = stream(server, BETA, 2, "cam", header=False)
    assert hello["frame"] == 0 and [h["frame"] for h in headers] == [0, 1]
    hello, headers = stream(server, ALPHA, 1, "cam")
    assert hello["frame"] == 3 and headers[0]["frame"] == 3
    assert httpx.get(url, headers=as_key(BETA)).json()["frame"] == 2

    # Server-made ids are UUID4s. Keys are stored as hashes, never in Redis key names or values.
    hello, _ = stream(server, BETA, 1)
    assert uuid.UUID(hello["session_id"]).version == 4
    keys = redis_keys(prefix)
    assert f"{prefix}:session:{owner_id(ALPHA)}:cam" in keys and f"{prefix}:session:{owner_id(BETA)}:cam" in keys
    _assert_no_raw_keys(keys)
    assert httpx.delete(url, headers=as_key(ALPHA)).status_code == 204
    assert httpx.get(url, headers=as_key(ALPHA)).status_code == 404
    assert httpx.get(url, headers=as_key(BETA)).status_code == 200  # beta's own "cam" is untouched


def _assert_no_raw_keys(keys: list[str]) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        for key in keys:
            kind = client.type(key)
            if kind == b"string":
                value = client.get(key)
            elif kind == b"hash":  # e.g. a job's blob sizes
                value = b"".join(k + v for k, v in client.hgetall(key).items())
            elif kind == b"set":
                value = b"".join(client.smembers(key))
            elif kind == b"zset":  # e.g. the job quotas' ledgers
                value = b"".join(member for member, _ in client.zrange(key, 0, -1, withscores=True))
            else:
                assert kind == b"list", (key, kind)
                value = b"".join(client.lrange(key, 0, -1))
            for secret in (ALPHA, BETA):
                assert secret not in key and secret.encode() not in value, key
    finally:
        client.close()


def test_jobs_belong_to_their_key(server: Server, tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", moving_square_frames(4))
    files = {"file": (clip.name, clip.read_bytes(), "video/mp4")}
    assert httpx.post(f"{server.url}/v1/clips", files=files).status_code == 401
    response = httpx.post(f"{server.url}/v1/clips", files=files, headers=as_key(ALPHA))
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", job_id) and uuid.UUID(job_id).version == 4
    status_url, result_url = f"{server.url}/v1/jobs/{job_id}", f"{server.url}/v1/jobs/{job_id}/result"
    for url in (status_url, result_url):
        other = httpx.get(url, headers=as_key(BETA))
        assert other.status_code == 404 and job_id in other.json()["detail"]
        assert httpx.get(url).status_code == 401
    deadline = time.monotonic() + 180  # a bound for a busy machine, not a speed target
    while (status := httpx.get(status_url, headers=as_key(ALPHA)).json())["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    assert status["status"] == "done" and status["frames_done"] == 4
    assert httpx.get(result_url, headers=as_key(ALPHA)).headers["content-type"] == "application/zip"
    assert httpx.get(result_url, headers=as_key(BETA)).status_code == 404
    client = redis.Redis.from_url(REDIS_URL)
    try:
        record = json.loads(client.get(f"{server.env['prefix']}:job:{job_id}"))
    finally:
        client.close()
    assert record["owner"] == owner_id(ALPHA)
    _assert_no_raw_keys(redis_keys(server.env["prefix"]))
