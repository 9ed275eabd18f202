"""A server is alive from its first moment and ready once its model is loaded and warmed.

Real `vsod serve` processes: /healthz answers while /readyz still says 503 `loading`, the log names
each phase, a busy port is one line and a non-zero exit before any loading, and a model that fails
to load stops the server with one line. The loading state itself (what answers 503, a stream
closed with 1013) is held still in-process, where the app's lifespan has not run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
from starlette.testclient import TestClient

from service.api import create_app
from service.process import IMPORTING
from service.settings import Settings
from tests.conftest import make_test_store
from tests.servers import LOADING, REPO, SERVE, free_port, png

DEADLINE_S = 300  # generous on a loaded 2-core machine: a bound on a hang, not a speed assertion


@dataclass
class Observed:
    """What polling a starting server saw, in seconds since its process was started."""

    alive: float | None = None  # first /healthz 200
    alive_while_loading: float | None = None  # first /healthz 200 seen while /readyz said loading
    loading_details: list[str] = field(default_factory=list)
    ready: float | None = None  # first /readyz 200
    log: str = ""


def server_env(store: Path, port: int, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("VSOD_", "OMP_WAIT_POLICY"))}
    env.update({"VSOD_MODEL_STORE": str(store), "VSOD_MODEL": "slow-student", "VSOD_HOST": "127.0.0.1",
                "VSOD_PORT": str(port), "VSOD_LOG_LEVEL": "info", "OMP_NUM_THREADS": "1",
                "PYTHONPATH": str(REPO), **extra})
    return env


@pytest.fixture(scope="module")
def slow_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A larger input size than the shared test model: tracing and warming take long enough to watch."""
    return make_test_store(tmp_path_factory.mktemp("slow_store"), name="slow-student", input_size=(384, 384)).root


@pytest.fixture(scope="module")
def started(slow_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Observed, int]]:
    port = free_port()
    log = tmp_path_factory.mktemp("startup") / "server.log"
    begin = time.monotonic()
    with log.open("wb") as out:
        process = subprocess.Popen(SERVE, cwd=REPO, env=server_env(slow_store, port), stdout=out, stderr=subprocess.STDOUT)
    seen = Observed()
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            while seen.ready is None and time.monotonic() - begin < DEADLINE_S:
                assert process.poll() is None, log.read_text()
                try:
                    alive = client.get("/healthz").status_code == 200
                    ready = client.get("/readyz")
                except httpx.TransportError:
                    time.sleep(0.02)
                    continue
                now = time.monotonic() - begin
                if alive and seen.alive is None:
                    seen.alive = now
                if ready.status_code == 200:
                    seen.ready = now
                elif ready.status_code == 503 and ready.json()["detail"].startswith(LOADING):
                    seen.loading_details.append(ready.json()["detail"])
                    if alive and seen.alive_while_loading is None:
                        seen.alive_while_loading = now
        seen.log = log.read_text()
        yield seen, port
    finally:
        process.terminate()
        process.wait(timeout=60)


def test_alive_at_once_ready_when_loaded_and_warmed(started: tuple[Observed, int]) -> None:
    seen, _ = started
    assert seen.ready is not None, f"not ready within {DEADLINE_S} s:\n{seen.log[-3000:]}"
    assert seen.alive_while_loading is not None, f"/healthz never answered while loading:\n{seen.log[-3000:]}"
    assert seen.alive <= seen.alive_while_loading < seen.ready
    # alive already while torch and the app were being imported, before the app itself ran
    assert f"{LOADING}: {IMPORTING}" in seen.loading_details, seen.loading_details[:3]
    # /readyz said what it was doing, ending with the warm-up the runtime was given
    assert any("warming up" in detail for detail in seen.loading_details), seen.loading_details
    # ...and so did the log, phase by phase, with the thread policy the server set for itself.
    phases = [line for line in seen.log.splitlines() if f"{LOADING}: " in line]
    assert any("loading model slow-student" in line for line in phases), seen.log[-3000:]
    warming = next(line for line in phases if "warming up" in line)
    assert "OMP_WAIT_POLICY=PASSIVE" in warming and "1 thread(s)" in warming and "batch sizes 1-8" in warming, warming
    assert "ready in" in seen.log


def test_a_busy_port_is_one_line_before_any_loading(started: tuple[Observed, int], slow_store: Path) -> None:
    seen, port = started  # that server holds the port
    begin = time.monotonic()
    done = subprocess.run(SERVE, cwd=REPO, env=server_env(slow_store, port), capture_output=True, text=True,
                          timeout=DEADLINE_S)
    elapsed = time.monotonic() - begin
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("\n") == 1 and f"cannot listen on 127.0.0.1:{port}" in done.stderr, done.stderr
    assert "in use" in done.stderr.lower(), done.stderr
    assert seen.ready is not None and elapsed < seen.ready, (elapsed, seen.ready)  # reported before a load could end
    assert LOADING not in done.stderr + done.stdout


def test_the_serve_command_sets_the_policy_before_torch_loads() -> None:
    """`vsod serve` reads its settings and binds with torch not yet imported: the OpenMP policy it
    sets afterwards still reaches torch."""
    probe = ("import sys, service.cli, service.settings, service.process; "
             "service.settings.Settings(); service.process.listen('127.0.0.1', 0).close(); "
             "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "False"


def test_a_model_that_fails_to_load_stops_the_server_with_one_line(tmp_path: Path) -> None:
    store = make_test_store(tmp_path / "store", name="slow-student").root
    weights = store / "slow-student" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64] + b"\0" * 64)  # the manifest still reads; its sha256 fails
    done = subprocess.run(SERVE, cwd=REPO, env=server_env(store, free_port(), VSOD_LOG_LEVEL="warning"),
                          capture_output=True, text=True, timeout=DEADLINE_S)
    assert done.returncode == 1, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("vsod serve: error: failed to start while loading model slow-student"), done.stderr[-3000:]
    assert "does not match the manifest" in last
    assert "Traceback" not in done.stderr


def test_while_loading_what_needs_the_model_is_503_and_streams_close_1013(model_store_env: dict[str, str]) -> None:
    """The app before its lifespan has run is exactly a process still loading."""
    settings = Settings(model_store=Path(model_store_env["VSOD_MODEL_STORE"]), model=model_store_env["VSOD_MODEL"])
    client = TestClient(create_app(settings))  # not entered: no lifespan, so nothing loads
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["detail"] == f"{LOADING}: starting"
    assert ready.headers["retry-after"]
    for method, path in (("POST", "/v1/images"), ("GET", "/v1/models"), ("GET", "/v1/sessions/abc"), ("GET", "/metrics")):
        response = client.request(method, path, content=png(np.zeros((8, 8, 3), np.uint8)),
                                  headers={"content-type": "image/png"})
        assert response.status_code == 503, (path, response.text)
        assert "not ready" in response.json()["detail"] and response.headers["retry-after"]
    assert client.get("/openapi.json").status_code == 200
    with client.websocket_connect("/v1/stream") as ws:
        message = json.loads(ws.receive_text())
        assert message["type"] == "error" and message["code"] == "not_ready"
        closed = ws.receive()
        assert closed["type"] == "websocket.close" and closed["code"] == 1013
