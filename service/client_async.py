"""The asyncio twin of `service.client.VsodClient`: the same calls, awaited; many streams in one loop.

    async with AsyncVsodClient("http://127.0.0.1:8000") as client:
        async for mask in client.stream(frames, session_id="camera-1"):
            ...
        masks = await client.process_clip("clip.mp4")

Same protocol decisions as the synchronous client (service.client_common): lockstep frames,
reconnect-and-resume with the same session id, the API key in the `X-API-Key` header.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from .client_common import (
    Encoding,
    ResultFormat,
    StreamError,
    StreamResult,
    VsodConnectionError,
    VsodHTTPError,
    backoff_s,
    checked,
    config_message,
    decode_result,
    encode_frame,
    final_close,
    hello_problem,
    image_bytes,
    image_params,
    job_finished,
    key_headers,
    raw_mask,
    resume_gap,
    resume_note,
    server_error,
    stream_result,
    stream_url,
    ws_base,
)


class AsyncVsodClient:
    """A vsod server at `base_url` (http://host:port); `api_key` is sent when the server wants one."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        ws_base(self.base_url)
        self.api_key, self.timeout = api_key, timeout
        self.http = httpx.AsyncClient(base_url=self.base_url, headers=key_headers(api_key), timeout=timeout)

    async def __aenter__(self) -> AsyncVsodClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return checked(await self.http.request(method, path, **kwargs))
        except httpx.TransportError as error:
            raise VsodConnectionError(f"{method} {self.base_url}{path}: {error}") from error

    async def ready(self) -> dict[str, Any]:
        return (await self._request("GET", "/readyz")).json()

    async def segment_image(self, image: np.ndarray | bytes | str | Path, threshold: float | None = None) -> np.ndarray:
        data = await asyncio.to_thread(image_bytes, image)
        response = await self._request("POST", "/v1/images", params=image_params(threshold),
                                       files={"file": ("image", data, "application/octet-stream")})
        return raw_mask(response)

    async def submit_clip(self, path: str | Path) -> dict[str, Any]:
        path = Path(path)
        data = await asyncio.to_thread(path.read_bytes)
        return (await self._request("POST", "/v1/clips", files={"file": (path.name, data, "application/octet-stream")})).json()

    async def job(self, job_id: str) -> dict[str, Any]:
        return (await self._request("GET", f"/v1/jobs/{job_id}")).json()

    async def wait_job(self, job_id: str, timeout: float | None = 600.0, poll_s: float = 0.25,
                       progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        start = time.monotonic()
        while True:
            status = await self.job(job_id)
            if progress is not None:
                progress(status)
            if job_finished(status, time.monotonic() - start, timeout):
                return status
            await asyncio.sleep(poll_s)

    async def job_result(self, job_id: str, format: str = "npz") -> bytes:
        return (await self._request("GET", f"/v1/jobs/{job_id}/result", params={"format": format})).content

    async def process_clip(self, path: str | Path, format: ResultFormat = "npz", timeout: float | None = 600.0,
                           progress: Callable[[dict[str, Any]], None] | None = None) -> np.ndarray:
        job_id = (await self.submit_clip(path))["job_id"]
        await self.wait_job(job_id, timeout, progress=progress)
        return decode_result(await self.job_result(job_id, format), format)

    async def session(self, session_id: str) -> dict[str, Any]:
        return (await self._request("GET", f"/v1/sessions/{session_id}")).json()

    async def delete_session(self, session_id: str) -> None:
        await self._request("DELETE", f"/v1/sessions/{session_id}")

    def open_stream(self, session_id: str | None = None, encoding: Encoding = "png", quality: int = 90,
                    threshold: float | None = None, retries: int = 5, max_fps: float | None = None) -> AsyncLiveStream:
        """`async with client.open_stream("cam") as live: result = await live.send(frame)`."""
        return AsyncLiveStream(self, session_id, encoding, quality, threshold, retries, max_fps)

    async def stream(self, frames: Iterable[np.ndarray] | AsyncIterable[np.ndarray], session_id: str | None = None,
                     encoding: Encoding = "png", quality: int = 90, threshold: float | None = None, retries: int = 5,
                     max_fps: float | None = None) -> AsyncIterator[np.ndarray | None]:
        """One mask per frame, in order (None only for a mask lost in a drop; see StreamResult.lost)."""
        async with self.open_stream(session_id, encoding, quality, threshold, retries, max_fps) as live:
            if isinstance(frames, AsyncIterable):
                async for frame in frames:
                    yield (await live.send(frame)).mask
            else:
                for frame in frames:
                    yield (await live.send(frame)).mask


class AsyncLiveStream:
    """One session on `/v1/stream` in lockstep, reconnecting (same session id) when the connection drops."""

    def __init__(self, client: AsyncVsodClient, session_id: str | None, encoding: Encoding = "png", quality: int = 90,
                 threshold: float | None = None, retries: int = 5, max_fps: float | None = None) -> None:
        self.client, self.session_id = client, session_id
        self.encoding, self.quality, self.threshold, self.retries = encoding, quality, threshold, retries
        self.interval = 1.0 / max_fps if max_fps else 0.0
        self.next_frame, self.reconnects = 0, 0
        self.model: str | None = None
        self._ws: ClientConnection | None = None
        self._note: str | None = None
        self._last_send = 0.0

    async def __aenter__(self) -> AsyncLiveStream:
        await self._connect(first=True)
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def _json(self, ws: ClientConnection) -> dict[str, Any]:
        message = await asyncio.wait_for(ws.recv(), self.client.timeout)
        if not isinstance(message, str):
            raise StreamError("protocol", f"expected a JSON text message, got {len(message)} bytes")
        return json.loads(message)

    async def _connect(self, first: bool = False) -> None:
        url = stream_url(self.client.base_url, self.session_id)
        failures = 0
        while True:
            ws: ClientConnection | None = None
            try:
                ws = await connect(url, additional_headers=key_headers(self.client.api_key), max_size=None,
                                   open_timeout=self.client.timeout, close_timeout=2)
                hello = await self._json(ws)
                if problem := hello_problem(hello):
                    raise problem
                await ws.send(config_message(self.threshold))
                if problem := server_error(await self._json(ws)):
                    raise problem
                break
            except InvalidStatus as error:
                raise VsodHTTPError(error.response.status_code, error.response.body.decode(errors="replace")[:300]) from error
            except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed) as error:
                if ws is not None:
                    await ws.close()
                if isinstance(error, ConnectionClosed) and (final := final_close(error)):
                    raise final from error
                if failures >= self.retries:
                    raise VsodConnectionError(f"cannot stream to {url}: {error}") from error
                await asyncio.sleep(backoff_s(failures))
                failures += 1
            except BaseException:
                if ws is not None:
                    await ws.close()
                raise
        expected = self.next_frame
        self._ws, self.session_id, self.model = ws, str(hello["session_id"]), hello.get("model")
        self.next_frame = int(hello["frame"])
        self._note = hello.get("restarted")
        if not first:
            self.reconnects += 1
            self._note = self._note or resume_note(expected, self.next_frame)

    async def send(self, frame: np.ndarray) -> StreamResult:
        """Send one frame and wait for its mask; reconnects and resends when the connection drops."""
        data = await asyncio.to_thread(encode_frame, frame, self.encoding, self.quality)
        failures = 0
        while True:
            if self._ws is None:
                expected = self.next_frame
                await self._connect()
                if resume_gap(expected, self.next_frame) == "lost":
                    note, self._note = self._note, None
                    return StreamResult(expected, None, restarted=note, lost=True)
            try:
                if self.interval:
                    await asyncio.sleep(max(0.0, self._last_send + self.interval - time.monotonic()))
                    self._last_send = time.monotonic()
                await self._ws.send(data)  # type: ignore[union-attr]
                header, body = await self._receive_mask()
            except (ConnectionClosed, OSError, TimeoutError) as error:
                if isinstance(error, ConnectionClosed) and (final := final_close(error)):
                    raise final from error
                await self._drop()
                if failures >= self.retries:
                    raise VsodConnectionError(f"the stream kept dropping: {error}") from error
                failures += 1
                continue
            note, self._note = self._note, None
            result = stream_result(header, body, note)
            self.next_frame = result.frame + 1
            return result

    async def _receive_mask(self) -> tuple[dict[str, Any], bytes]:
        assert self._ws is not None
        while True:
            message = await self._json(self._ws)
            if problem := server_error(message):
                raise problem
            if message.get("type") == "mask":
                body = await asyncio.wait_for(self._ws.recv(), self.client.timeout)
                if not isinstance(body, bytes):
                    raise StreamError("protocol", "expected the mask's bytes after its header")
                return message, body

    async def reset(self) -> None:
        """Forget the session's temporal context; the next frame is frame 0 again."""
        if self._ws is None:
            await self._connect()
        assert self._ws is not None
        await self._ws.send(json.dumps({"type": "reset"}))
        while (message := await self._json(self._ws)).get("type") != "reset":
            if problem := server_error(message):
                raise problem
        self.next_frame = 0

    async def _drop(self) -> None:
        if self._ws is not None:
            try:
                await self._ws.close()
            except (OSError, ConnectionClosed, RuntimeError):  # already broken: nothing to tell the server
                pass
            self._ws = None

    async def close(self) -> None:
        """Close the connection; the session's state stays on the server until its TTL."""
        await self._drop()
