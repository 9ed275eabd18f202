"""Every HTTP problem as JSON `{"detail": ...}` with the right status; WebSocket error messages.

Bad input raises `HTTPException` in the routes (400, 404, 409, 413, 415); the handlers here catch
what escapes from lower layers so a client never sees an HTML page or a bare 500 traceback.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from ..engine import EngineClosed
from ..limits import LimitExceeded
from ..sessions import CacheUnavailable
from ..video import VideoError

log = logging.getLogger("vsod.api")

def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    from .schemas import Problem

    descriptions = {
        400: "Bad input (not an image or video, empty, malformed)",
        401: "An API key is required (X-API-Key header); only when the server sets VSOD_API_KEYS",
        403: "The API key is not valid",
        404: "No such session or job (never existed, expired, deleted, or another key's)",
        409: "The job has no result yet (queued, running or failed)",
        413: "Over a configured limit: upload size, frame size, clip frames or duration",
        415: "Unsupported media type",
        429: "Over a quota (clip jobs queued or running, or bytes held); wait the Retry-After seconds",
        503: "Not ready, shutting down, or the session/job store is unavailable",
    }
    return {status: {"model": Problem, "description": descriptions[status]} for status in statuses}


def ws_error(code: str, message: str) -> dict[str, str]:
    """The one shape of a WebSocket error message; the connection stays open after it."""
    return {"type": "error", "code": code, "message": message}


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every method some route serves at `path` (Starlette's 405 names only the first route's)."""
    methods: set[str] = set()
    for route in app.routes:
        regex, route_methods = getattr(route, "path_regex", None), getattr(route, "methods", None)
        if regex is not None and route_methods and regex.match(path):
            methods |= route_methods
    return sorted(methods)


def install(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_problem(request: Request, error: StarletteHTTPException) -> Response:
        if error.status_code == 405:
            allow = ", ".join(allowed_methods(app, request.url.path))
            error = StarletteHTTPException(405, error.detail, headers={**(error.headers or {}), "Allow": allow})
        return await http_exception_handler(request, error)

    @app.exception_handler(VideoError)
    async def bad_media(_: Request, error: VideoError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=400)

    @app.exception_handler(LimitExceeded)
    async def over_limit(_: Request, error: LimitExceeded) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=413)

    @app.exception_handler(CacheUnavailable)
    async def cache_down(_: Request, error: CacheUnavailable) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=503)

    @app.exception_handler(RedisError)
    async def store_down(_: Request, error: RedisError) -> JSONResponse:
        log.warning("redis: %s", error)
        return JSONResponse({"detail": f"the session/job store is unavailable: {error}"}, status_code=503)

    @app.exception_handler(EngineClosed)
    async def closing(_: Request, error: EngineClosed) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=503)

    @app.exception_handler(Exception)
    async def internal(_: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse({"detail": f"internal error: {type(error).__name__}"}, status_code=500)
