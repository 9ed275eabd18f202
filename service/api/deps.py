"""What routes depend on: the process's services, the caller's API key, and size-limited uploads.

Uploads come as multipart (`file` field) or as a raw body with a media type. The limit is
enforced while reading (also for chunked bodies with no Content-Length), so an oversized upload
costs at most the limit in memory or spool space, and the client gets 413, not a dropped socket.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from fastapi import HTTPException, Request, Security
from fastapi.security import APIKeyHeader
from redis.asyncio import Redis
from starlette.datastructures import UploadFile
from starlette.types import Message

from ..auth import HEADER, ApiKeys, AuthError
from ..engine import Engine
from ..job_store import JobStore
from ..jobs import JobRunner
from ..live import LiveSessions
from ..metrics import Metrics
from ..model import Predictor
from ..settings import Settings

MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around the file itself


@dataclass
class Services:
    """Everything one process holds: built at startup by the app's lifespan, closed at shutdown."""

    settings: Settings
    predictor: Predictor
    engine: Engine
    live: LiveSessions
    jobs: JobStore
    runner: JobRunner
    metrics: Metrics
    spool: Path
    redis: Redis | None = None
    keys: ApiKeys = field(default_factory=ApiKeys)
    draining: bool = False  # SIGTERM received: not ready, no new streams (service.api.lifecycle)
    streams: set[Any] = field(default_factory=set)  # open stream connections, to close them at shutdown


def services(request: Request) -> Services:
    return request.app.state.services


api_key_header = APIKeyHeader(
    name=HEADER, auto_error=False, scheme_name="ApiKey",
    description="Needed when the server sets VSOD_API_KEYS. The WebSocket also takes `?api_key=`.",
)


async def caller(request: Request, key: str | None = Security(api_key_header)) -> str:
    """The owner id of the request's API key ("" when keys are off); 401 without a key, 403 for an unknown one."""
    try:
        return services(request).keys.owner(key)
    except AuthError as error:
        raise HTTPException(error.status, error.message, headers={"WWW-Authenticate": f'ApiKey header="{HEADER}"'}) from None


@dataclass
class Upload:
    filename: str
    content_type: str  # lower case, without parameters
    size: int
    data: bytes | None = None  # kept in memory (images)
    path: Path | None = None  # or spooled to disk (clips)


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"upload is larger than the limit of {limit} bytes")


def _limited(request: Request, limit: int) -> Request:
    """The same request, with a receive channel that refuses bodies over `limit` bytes."""
    seen = 0
    receive = request.receive

    async def counting() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _too_large(limit)
        return message

    return Request(request.scope, counting)


def _media_type(value: str | None) -> str:
    return (value or "").split(";")[0].strip().lower()


async def read_upload(
    request: Request, *, limit: int, raw_types: frozenset[str], spool: Path | None = None, what: str = "file"
) -> Upload:
    """The uploaded file, from a multipart `file` field or a raw body of one of `raw_types`.

    With `spool` the file goes to a new file there (the caller owns and deletes it), else to memory.
    415 for other media types, 413 over `limit`, 400 when empty or when the form has no `file`.
    """
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit + MULTIPART_SLACK:
        raise _too_large(limit)
    media_type = _media_type(request.headers.get("content-type"))
    if media_type == "multipart/form-data":
        form = await _limited(request, limit + MULTIPART_SLACK).form(max_files=1, max_fields=8)
        try:
            item = form.get("file")
            if not isinstance(item, UploadFile):
                raise HTTPException(400, f"the multipart body needs a 'file' field holding the {what}")
            upload = await _store(item.file, item.filename or "", _media_type(item.content_type), limit, spool)
        finally:
            await form.close()
    elif media_type in raw_types:
        with tempfile.SpooledTemporaryFile(max_size=1 << 20) as body:
            async for chunk in _limited(request, limit).stream():
                body.write(chunk)
            body.seek(0)
            upload = await _store(body, "", media_type, limit, spool)  # type: ignore[arg-type]
    else:
        allowed = ", ".join(sorted(raw_types | {"multipart/form-data"}))
        raise HTTPException(415, f"unsupported media type {media_type or '(none)'!r}: send one of {allowed}")
    if upload.size == 0:
        if upload.path is not None:
            upload.path.unlink(missing_ok=True)
        raise HTTPException(400, f"the {what} is empty (0 bytes)")
    return upload


async def _store(source: IO[bytes], filename: str, content_type: str, limit: int, spool: Path | None) -> Upload:
    def copy() -> Upload:
        source.seek(0, 2)
        size = source.tell()
        if size > limit:
            raise _too_large(limit)
        source.seek(0)
        if spool is None:
            return Upload(filename, content_type, size, data=source.read())
        with tempfile.NamedTemporaryFile(dir=spool, prefix="upload-", delete=False) as handle:
            shutil.copyfileobj(source, handle, 1 << 20)
        return Upload(filename, content_type, size, path=Path(handle.name))

    return await asyncio.to_thread(copy)
