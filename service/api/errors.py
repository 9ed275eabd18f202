"""Every HTTP problem as JSON `{"detail": ...}` with the right status; WebSocket error messages.

Bad input raises `HTTPException` in the routes (400, 404, 409, 413, 415); the handlers here catch
what escapes from lower layers so a client never sees an HTML page or a bare 500 traceback.
Every message passes `public()` on its way out: a server path in it is replaced, and a long token
(a 10,000-character id sent back in "no session '...'") is clipped, whichever layer wrote it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from ..engine import EngineClosed
from ..limits import LimitExceeded
from ..live import StoreUnavailable
from ..protocol import ErrorMessage
from ..video import VideoError

log = logging.getLogger("vsod.api")

LONGEST_TOKEN = 64  # ids are at most 128 characters, but nothing needs to be echoed in full
# An absolute path of two or more parts, not inside a URL or another word ("/v1/jobs/x" is one too,
# which is why `public` replaces only those whose folder exists on this server).
_PATH = re.compile(r"(?<![\w/.:-])/(?:[^\s/'\"`]+/)+[^\s/'\"`,;)]*")
_LONG = re.compile(rf"[^\s'\"`]{{{LONGEST_TOKEN + 1},}}")
REDACTED = "<server path>"


def public(message: str) -> str:
    """`message` fit for a client: paths on this server replaced, tokens over LONGEST_TOKEN clipped."""

    def path(match: re.Match[str]) -> str:
        folder = Path(match.group(0)).parent
        return REDACTED if folder != Path("/") and folder.is_dir() else match.group(0)

    message = _PATH.sub(path, message)
    return _LONG.sub(lambda m: f"{m.group(0)[:24]}…({len(m.group(0))} characters)", message)


def problem(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The one shape of an HTTP error: `{"detail": message}`, the message made `public`."""
    return JSONResponse({"detail": public(detail)}, status_code=status, headers=headers)


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


def ws_error(code: str, message: str) -> ErrorMessage:
    """A WebSocket error message (service/protocol.py), its message made `public`."""
    return ErrorMessage(code=code, message=public(message))


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
        headers = dict(error.headers or {})
        if error.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(app, request.url.path))
        if error.status_code in (204, 304):  # no body allowed (not raised today; kept correct)
            return Response(status_code=error.status_code, headers=headers)
        if not isinstance(error.detail, str):  # a structured detail (none is raised today) keeps its shape
            return JSONResponse({"detail": jsonable_encoder(error.detail)}, status_code=error.status_code, headers=headers)
        return problem(error.status_code, error.detail, headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        # FastAPI's list of problems, each input clipped and cleaned as any other message.
        items = [{**item, "input": public(item["input"])} if isinstance(item.get("input"), str) else item
                 for item in error.errors()]
        return JSONResponse({"detail": jsonable_encoder(items)}, status_code=422)

    @app.exception_handler(VideoError)
    async def bad_media(_: Request, error: VideoError) -> JSONResponse:
        return problem(400, str(error))

    @app.exception_handler(LimitExceeded)
    async def over_limit(_: Request, error: LimitExceeded) -> JSONResponse:
        return problem(413, str(error))

    @app.exception_handler(StoreUnavailable)
    async def cache_down(_: Request, error: StoreUnavailable) -> JSONResponse:
        return problem(503, str(error))

    @app.exception_handler(RedisError)
    async def store_down(_: Request, error: RedisError) -> JSONResponse:
        log.warning("redis: %s", error)
        return problem(503, f"the session/job store is unavailable: {error}")

    @app.exception_handler(EngineClosed)
    async def closing(_: Request, error: EngineClosed) -> JSONResponse:
        return problem(503, str(error))

    @app.exception_handler(Exception)
    async def internal(_: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return problem(500, f"internal error: {type(error).__name__}")
