"""The FastAPI application factory and its lifespan: model, stores, engine and job worker.

    app = create_app(Settings(redis_url="redis://127.0.0.1:6379/0"))

Everything a process holds is built once, in the background from the first moment the app runs
(`lifecycle.load`: the model loaded onto the best device, optimised and warmed up), and closed at
shutdown; routes reach it through `deps.services`. Until it is built the app is alive (`/healthz`),
not ready (`/readyz` 503 `loading: ...`), and `LoadingGate` answers what needs the model with 503.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic.json_schema import models_json_schema
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import __version__
from ..metrics import Metrics, RequestMetrics
from ..process import not_ready
from ..protocol import MESSAGES, TRY_AGAIN_LATER
from ..settings import Settings, get_settings
from . import errors
from .deps import caller
from .lifecycle import Startup, load, stop_services
from .routes import clips, health, images, models, sessions, stream

STATIC = Path(__file__).resolve().parents[1] / "static"

DESCRIPTION = """
Video salient object detection: a mask per frame from a fast spatiotemporally distilled student.

* **Images**: `POST /v1/images` (stateless).
* **Clips**: `POST /v1/clips` → job id; `GET /v1/jobs/{id}`; `GET /v1/jobs/{id}/result?format=zip|mp4|npz`.
* **Live streams**: WebSocket `/v1/stream?session_id=<id>` (no id: the server makes one). Frames go in
  as binary messages (JPEG or PNG); each processed frame comes back as a `MaskHeader` message and then
  the mask as one binary message. The text messages are the schemas `SessionHello`, `StreamConfig`,
  `ResetRequest`, `CloseRequest`, `ResetDone`, `MaskHeader` and `ErrorMessage` below (service/protocol.py).
  The temporal state lives in the session store (Redis with `VSOD_REDIS_URL`), so a client that
  reconnects with its `session_id`, to this or another replica, continues where it left off.
* **Sessions**: `GET /v1/sessions/{id}`, `DELETE /v1/sessions/{id}`.
* **API keys** (when the server sets `VSOD_API_KEYS`): send `X-API-Key` (the WebSocket also takes
  `?api_key=`); 401 without a key, 403 for an unknown one. Sessions and jobs belong to the key that
  made them; another key gets 404. `/healthz`, `/readyz`, the docs and the page at `/` need no key.
* **Limits** (413/415 and stream errors): see docs/reliability.md.
"""

TAGS = [
    {"name": "images", "description": "One image in, one mask out."},
    {"name": "clips", "description": "Upload a video; its masks are computed by a background job."},
    {"name": "sessions", "description": "Temporal state of live streams (WebSocket `/v1/stream`)."},
    {"name": "models", "description": "The model store."},
    {"name": "health", "description": "Liveness, readiness, Prometheus metrics."},
]


DOCS_ASSETS = "/docs-assets"  # Swagger UI's and ReDoc's scripts, styles and icon


class LoadingGate:
    """Until the process is ready, what needs the model answers 503 (a stream: an error message and
    close 1013) instead of reaching a route before its services exist. Health, docs and the page pass."""

    OPEN = ("/healthz", "/readyz", "/docs", "/redoc", "/openapi.json", "/static/", DOCS_ASSETS)

    def __init__(self, app: ASGIApp, startup: Startup) -> None:
        self.app, self.startup = app, startup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        reason = self.startup.not_ready
        path = scope.get("path", "")
        if reason is None or scope["type"] == "lifespan" or path == "/" or path.startswith(self.OPEN):
            await self.app(scope, receive, send)
            return
        message = not_ready(reason)
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "text": errors.ws_error("not_ready", message).text()})
            await send({"type": "websocket.close", "code": TRY_AGAIN_LATER, "reason": "not ready"})
            return
        body = json.dumps({"detail": message}).encode()
        await send({"type": "http.response.start", "status": 503, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"retry-after", b"5")]})
        await send({"type": "http.response.body", "body": body})


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    metrics = Metrics()
    startup = Startup()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def start() -> None:
            await load(settings, metrics, startup)
            app.state.services = startup.services  # in the same step as `startup`: the gate and routes agree

        # The server answers while this runs: alive at once, ready when loaded.
        loading = asyncio.create_task(start(), name="vsod-startup")
        try:
            yield
        finally:
            if not loading.done():
                loading.cancel()
            await asyncio.gather(loading, return_exceptions=True)
            if startup.services is not None:
                await stop_services(startup.services)

    # FastAPI's own /docs and /redoc load Swagger UI and ReDoc from a CDN: blank pages offline. These
    # serve the same files from the fastapi-offline package, at DOCS_ASSETS.
    app = FastAPIOffline(title="vsod", version=__version__, description=DESCRIPTION, openapi_tags=TAGS,
                         lifespan=lifespan, static_url=DOCS_ASSETS)
    app.state.startup = startup
    app.dependency_overrides[get_settings] = lambda: settings
    errors.install(app)
    app.add_middleware(LoadingGate, startup=startup)
    app.add_middleware(RequestMetrics, metrics=metrics)
    app.include_router(health.router)  # /healthz and /readyz are public; /metrics asks for a key itself
    # With VSOD_API_KEYS set these need a key (the WebSocket checks its own: see routes/stream.py).
    for module in (models, images, clips, sessions):
        app.include_router(module.router, dependencies=[Depends(caller)], responses=errors.problems(401, 403))
    app.include_router(stream.router)
    describe_stream_protocol(app)
    # The live camera page (service/static, no build step); it asks for the API key itself.
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.get("/", include_in_schema=False)(lambda: FileResponse(STATIC / "index.html"))
    return app


def describe_stream_protocol(app: FastAPI) -> None:
    """Put the WebSocket's messages into the API description (OpenAPI has no WebSocket operations)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            _, definitions = models_json_schema([(model, "serialization") for model in MESSAGES],
                                                ref_template="#/components/schemas/{model}")
            schema.setdefault("components", {}).setdefault("schemas", {}).update(definitions["$defs"])
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
