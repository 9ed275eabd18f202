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
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from .client_common import (
    Encoding,
    ResultFormat,
    StreamResult,
    VsodConnectionError,
    VsodHTTPError,
    checked,
    decode_result,
    encode_frame,
    image_bytes,
    image_params,
    job_finished,
    key_headers,
    raw_mask,
    upload_retry_delay,
    ws_base,
)
from .client_stream import Action, CursorView, Drop, Open, Pace, Plan, Receive, SendBytes, SendText, Sleep, StreamCursor


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

    async def submit_clip(self, path: str | Path, wait_s: float = 0.0) -> dict[str, Any]:
        path = Path(path)
        data = await asyncio.to_thread(path.read_bytes)
        start = time.monotonic()
        while True:
            try:
                files = {"file": (path.name, data, "application/octet-stream")}
                return (await self._request("POST", "/v1/clips", files=files)).json()
            except VsodHTTPError as error:
                delay = upload_retry_delay(error, time.monotonic() - start, wait_s)
                if delay is None:
                    raise
                await asyncio.sleep(delay)

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

    async def delete_job(self, job_id: str) -> None:
        await self._request("DELETE", f"/v1/jobs/{job_id}")

    async def process_clip(self, path: str | Path, format: ResultFormat = "npz", timeout: float | None = 600.0,
                           progress: Callable[[dict[str, Any]], None] | None = None) -> np.ndarray:
        job_id = (await self.submit_clip(path, wait_s=timeout if timeout is not None else float("inf")))["job_id"]
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


class AsyncLiveStream(CursorView):
    """One session on `/v1/stream` in lockstep, reconnecting (same session id) when the connection drops.

    It performs the I/O of the same `StreamCursor` plans as the synchronous `LiveStream`."""

    def __init__(self, client: AsyncVsodClient, session_id: str | None, encoding: Encoding = "png", quality: int = 90,
                 threshold: float | None = None, retries: int = 5, max_fps: float | None = None) -> None:
        self.client, self.encoding, self.quality = client, encoding, quality
        self.cursor = StreamCursor(client.base_url, session_id, threshold, retries, max_fps)
        self._ws: ClientConnection | None = None
        self._last_send = 0.0

    async def __aenter__(self) -> AsyncLiveStream:
        await self._run(self.cursor.connect(first=True))
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def send(self, frame: np.ndarray) -> StreamResult:
        """Send one frame and wait for its mask; reconnects and resends when the connection drops."""
        data = await asyncio.to_thread(encode_frame, frame, self.encoding, self.quality)
        return await self._run(self.cursor.send(data))

    async def reset(self) -> None:
        """Forget the session's temporal context; the next frame is frame 0 again."""
        await self._run(self.cursor.reset())

    async def close(self) -> None:
        """Close the connection; the session's state stays on the server until its TTL."""
        await self._run(self.cursor.drop())

    async def _run(self, plan: Plan) -> Any:
        """Perform a plan's I/O until it returns; an I/O error is thrown into the plan to decide on."""
        outcome: Any = None
        error: Exception | None = None
        while True:
            try:
                action = plan.throw(error) if error is not None else plan.send(outcome)
            except StopIteration as done:
                return done.value
            outcome, error = None, None
            try:
                outcome = await self._perform(action)
            except Exception as problem:  # noqa: BLE001 - the plan decides what each failure means
                error = problem

    async def _perform(self, action: Action) -> Any:
        if isinstance(action, Open):
            self._ws = await connect(action.url, additional_headers=key_headers(self.client.api_key), max_size=None,
                                     open_timeout=self.client.timeout, close_timeout=2)
        elif isinstance(action, Receive):
            assert self._ws is not None
            return await asyncio.wait_for(self._ws.recv(), self.client.timeout)
        elif isinstance(action, (SendText, SendBytes)):
            assert self._ws is not None
            await self._ws.send(action.text if isinstance(action, SendText) else action.data)
        elif isinstance(action, Pace):
            await asyncio.sleep(max(0.0, self._last_send + action.interval - time.monotonic()))
            self._last_send = time.monotonic()
        elif isinstance(action, Sleep):
            await asyncio.sleep(action.seconds)
        elif isinstance(action, Drop) and self._ws is not None:
            with suppress(OSError, ConnectionClosed, RuntimeError):  # already broken: nothing to tell the server
                await self._ws.close()
            self._ws = None
        return None
