"""The HTTP API on a real server with the in-memory default: health, metrics, models, docs, images,
and every bad input getting a clear JSON error with the right status."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.api.errors import LONGEST_TOKEN, public
from service.model import Predictor
from tests.servers import (
    Server,
    decode_png_mask,
    free_port,
    jpeg,
    max_diff,
    moving_square_frames,
    png,
    running_server,
)

LIMITS = {"max_frame_bytes": 300_000, "max_frame_side": 1024}


@pytest.fixture(scope="module")
def server(model_store_env: dict[str, str]) -> Iterator[Server]:
    with running_server(model_store_env, **LIMITS) as running:  # no VSOD_REDIS_URL: in-memory default
        yield running


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http


@pytest.fixture(scope="module")
def predictor(model_store) -> Predictor:  # type: ignore[no-untyped-def]
    return Predictor(*model_store.load("test-student"), device="cpu")


def test_health_ready_and_models(server: Server, client: httpx.Client, predictor: Predictor) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready == {"status": "ready", "model": predictor.model_id, "device": "cpu", "backend": "onnxruntime-cpu",
                     "cache": "memory"}  # VSOD_BACKEND=auto on a CPU, with the model's exported graph
    response = client.get("/v1/models")
    models = response.json()
    assert models["loaded"] == predictor.model_id and models["device"] == "cpu"
    [entry] = models["models"]
    assert entry["name"] == "test-student" and entry["loaded"] is True and entry["input_size"] == [128, 128]
    store = server.env["VSOD_MODEL_STORE"]
    assert "store" not in models and store not in response.text, "the store's path is the server's business"


@pytest.mark.parametrize(("page", "script"), [("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")])
def test_docs_work_offline(client: httpx.Client, page: str, script: str) -> None:
    """Every script, style and icon the docs pages load comes from this server, not a CDN."""
    html = client.get(page)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assets = re.findall(r"""(?:src|href)\s*[=:]\s*['"]([^'"]+)['"]""", html.text)
    assert any(asset.endswith(script) for asset in assets), assets
    assert not re.search(r"https?://", html.text), "a docs page refers to another host"
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200 and len(response.content) > 1000, asset
    assert client.get("/openapi.json").status_code == 200


def test_docs_and_openapi(client: httpx.Client) -> None:
    assert "swagger" in client.get("/docs").text.lower()
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in ("/v1/images", "/v1/clips", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/result", "/v1/sessions/{session_id}",
                 "/healthz", "/readyz", "/v1/models"):
        assert path in paths, path
    body = paths["/v1/images"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "image/jpeg", "image/png"} <= set(body)
    assert "examples" in spec["components"]["schemas"]["JobStatus"]
    assert "/v1/stream" in spec["info"]["description"]  # the WebSocket protocol is documented there


def test_image_multipart_and_raw_bodies(client: httpx.Client, predictor: Predictor) -> None:
    frame = moving_square_frames(1, 90, 120)[0]
    expected = predictor.predict_image(frame)
    response = client.post("/v1/images", files={"file": ("frame.png", png(frame), "image/png")})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert max_diff(decode_png_mask(response.content), expected) <= 1
    # A raw PNG body, raw mask bytes back with the shape in headers.
    response = client.post("/v1/images?format=raw", content=png(frame), headers={"content-type": "image/png"})
    assert response.status_code == 200 and response.headers["x-mask-width"] == "120"
    raw = np.frombuffer(response.content, np.uint8).reshape(int(response.headers["x-mask-height"]), 120)
    assert max_diff(raw, expected) <= 1
    # A JPEG with a threshold: a binary mask.
    response = client.post("/v1/images?threshold=0.5", content=jpeg(frame), headers={"content-type": "image/jpeg"})
    assert set(np.unique(decode_png_mask(response.content))) <= {0, 255}
    # Stateless: the same image twice gives the same mask.
    again = client.post("/v1/images", files={"file": ("frame.png", png(frame), "image/png")})
    assert again.content == client.post("/v1/images", files={"file": ("f.png", png(frame), "image/png")}).content


@pytest.mark.parametrize(
    ("request_kwargs", "status", "detail"),
    [
        ({"files": {"file": ("x.png", b"not an image", "image/png")}}, 400, "not a decodable image"),
        ({"content": b"GIF89a garbage", "headers": {"content-type": "image/png"}}, 400, "not a decodable image"),
        ({"files": {"file": ("x.png", b"", "image/png")}}, 400, "empty"),
        ({"content": b"", "headers": {"content-type": "image/jpeg"}}, 400, "empty"),
        ({"files": {"file": ("x.png", b"\0" * 300_001, "image/png")}}, 413, "limit"),
        ({"content": b"\0" * 300_001, "headers": {"content-type": "image/png"}}, 413, "limit"),
        ({"content": png(np.zeros((8, 1100, 3), np.uint8)), "headers": {"content-type": "image/png"}}, 413, "1024"),
        ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "unsupported media type"),
        ({"content": b'{"image": 1}', "headers": {"content-type": "application/json"}}, 415, "unsupported media type"),
        ({"files": {"file": ("notes.txt", b"hello", "text/plain")}}, 415, "unsupported media type"),
        ({"files": {"other": ("x.png", b"abc", "image/png")}}, 400, "'file' field"),
        ({"data": {"file": "just text"}, "files": {"other": ("a.bin", b"x")}}, 400, "'file' field"),
        ({"data": {"file": "just text"}}, 415, "unsupported media type"),  # a urlencoded form
    ],
    ids=["garbage-multipart", "garbage-raw", "empty-multipart", "empty-raw", "too-large-multipart", "too-large-raw",
         "too-wide", "text-plain", "json", "text-part", "no-file-field", "file-not-a-file",
         "urlencoded"],
)
def test_image_bad_inputs(client: httpx.Client, request_kwargs: dict, status: int, detail: str) -> None:
    response = client.post("/v1/images", **request_kwargs)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert detail in response.json()["detail"]


def test_chunked_upload_over_the_limit_is_413(client: httpx.Client) -> None:
    def body() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while reading
        for _ in range(40):
            yield b"\0" * 10_000

    response = client.post("/v1/images", content=body(), headers={"content-type": "image/png"})
    assert response.status_code == 413 and "limit" in response.json()["detail"]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/images?format=gif", 422),
        ("/v1/images?threshold=2", 422),
        ("/v1/jobs/0123456789abcdef0123456789abcdef", 404),
        ("/v1/jobs/not-a-job", 404),
        ("/v1/jobs/0123456789abcdef0123456789abcdef/result", 404),
        ("/v1/jobs/0123456789abcdef0123456789abcdef/result?format=gif", 422),
        ("/v1/sessions/nobody", 404),
        ("/v1/nothing-here", 404),
    ],
)
def test_bad_paths_and_parameters(client: httpx.Client, path: str, status: int) -> None:
    method = "POST" if path.startswith("/v1/images") else "GET"
    response = client.request(method, path, content=png(np.zeros((8, 8, 3), np.uint8)),
                              headers={"content-type": "image/png"})
    assert response.status_code == status and response.json()["detail"]


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/sessions/{long}"), ("DELETE", "/v1/sessions/{long}"), ("GET", "/v1/jobs/{long}"),
     ("GET", "/v1/jobs/{long}/result"), ("POST", "/v1/images?format={long}"), ("GET", "/v1/{long}")],
)
def test_long_ids_are_not_echoed_back(client: httpx.Client, method: str, path: str) -> None:
    long = "x" * 10_000
    response = client.request(method, path.format(long=long), content=png(np.zeros((8, 8, 3), np.uint8)),
                              headers={"content-type": "image/png"})
    assert 400 <= response.status_code < 500 and response.json()["detail"], response.text[:300]
    assert "x" * (LONGEST_TOKEN + 1) not in response.text and len(response.text) < 1000, response.text[:300]


def test_messages_lose_server_paths_and_long_tokens(tmp_path: Path) -> None:
    spool = tmp_path / "vsod-spool-abc"
    spool.mkdir()
    message = public(f"cannot open video '{spool}/upload-123.mp4': Invalid data; see /v1/jobs/abc and {'y' * 500}")
    assert str(tmp_path) not in message and "upload-123" not in message and "<server path>" in message
    assert "/v1/jobs/abc" in message, "API paths are not server paths"
    assert "y" * (LONGEST_TOKEN + 1) not in message and "(500 characters)" in message


def test_metrics_count_requests(client: httpx.Client) -> None:
    client.get("/healthz")
    client.post("/v1/images", content=b"junk", headers={"content-type": "image/png"})
    text = client.get("/metrics").text
    assert 'vsod_http_requests_total{method="GET",route="/healthz",status="200"}' in text
    assert 'vsod_http_requests_total{method="POST",route="/v1/images",status="400"}' in text
    for name in ("vsod_frame_latency_seconds_bucket", "vsod_active_sessions", "vsod_dropped_frames_total",
                 "vsod_engine_queue_depth"):
        assert name in text, name


def test_readyz_is_503_with_the_reason_when_redis_is_unreachable(model_store_env: dict[str, str]) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with running_server(model_store_env, ready_path="/healthz", redis_url=dead) as server:
        response = httpx.get(f"{server.url}/readyz", timeout=30)
        assert response.status_code == 503
        assert "session store (redis) unreachable" in response.json()["detail"]
        assert httpx.get(f"{server.url}/healthz").status_code == 200  # alive, just not ready


def test_server_with_a_missing_model_fails_with_one_line(model_store_env: dict[str, str]) -> None:
    import os
    import subprocess

    from tests.servers import REPO, SERVE

    env = {**os.environ, **model_store_env, "VSOD_MODEL": "no-such-model", "VSOD_PORT": str(free_port())}
    done = subprocess.run(SERVE, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "no-such-model" in done.stderr and "test-student" in done.stderr
