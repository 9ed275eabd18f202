"""Python client for a vsod server: live streams, clip jobs and still images (httpx + websockets).

    from service.client import VsodClient

    with VsodClient("http://127.0.0.1:8000") as client:
        masks = list(client.stream(frames, session_id="camera-1"))  # live: temporal context kept
        masks = client.process_clip("clip.mp4")                      # upload, wait, fetch: (T,H,W)
        mask = client.segment_image(frame)                           # one still image, no state

Frames are uint8 HxWx3 RGB arrays; masks are uint8 HxW (0..255 saliency) at the frame's size.
`AsyncVsodClient` (service.client_async) is the same for asyncio code.

Streams run in lockstep (the next frame goes out when the previous mask arrived), so the server
never has to drop a frame. When the connection drops, the stream reconnects with the same
session id and continues from the frame index the server reports: the temporal state lives in the
server's session store, not in the connection, so another replica sharing the Redis can take over.
Server problems raise `VsodError` subclasses carrying the server's own message.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from .client_async import AsyncVsodClient
from .client_common import (
    Encoding,
    JobFailed,
    ResultFormat,
    StreamError,
    StreamResult,
    VsodConnectionError,
    VsodError,
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

__all__ = ["AsyncVsodClient", "JobFailed", "LiveStream", "StreamError", "StreamResult", "VsodClient",
           "VsodConnectionError", "VsodError", "VsodHTTPError", "encode_frame"]


class VsodClient:
    """A vsod server at `base_url` (http://host:port); `api_key` is sent when the server wants one."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        ws_base(self.base_url)  # a bad URL fails here, not at the first call
        self.api_key, self.timeout = api_key, timeout
        self.http = httpx.Client(base_url=self.base_url, headers=key_headers(api_key), timeout=timeout)

    def __enter__(self) -> VsodClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return checked(self.http.request(method, path, **kwargs))
        except httpx.TransportError as error:
            raise VsodConnectionError(f"{method} {self.base_url}{path}: {error}") from error

    # -- service ---------------------------------------------------------------------------------
    def ready(self) -> dict[str, Any]:
        """/readyz: model id, device, inference backend, cache (VsodHTTPError 503 with the reason when not ready)."""
        return self._request("GET", "/readyz").json()

    def models(self) -> dict[str, Any]:
        return self._request("GET", "/v1/models").json()

    # -- images ----------------------------------------------------------------------------------
    def segment_image(self, image: np.ndarray | bytes | str | Path, threshold: float | None = None) -> np.ndarray:
        """One still image (RGB array, encoded bytes or a file path) -> its mask; no temporal state."""
        response = self._request("POST", "/v1/images", params=image_params(threshold),
                                 files={"file": ("image", image_bytes(image), "application/octet-stream")})
        return raw_mask(response)

    # -- clips -----------------------------------------------------------------------------------
    def submit_clip(self, path: str | Path, wait_s: float = 0.0) -> dict[str, Any]:
        """Upload a video; returns the job (`job_id`, `status`, `frames_total`...). A busy server
        (429 over a quota, 503 loading) is asked again after its Retry-After, for up to `wait_s`."""
        path = Path(path)
        start = time.monotonic()
        while True:
            try:
                with path.open("rb") as handle:
                    files = {"file": (path.name, handle, "application/octet-stream")}
                    return self._request("POST", "/v1/clips", files=files).json()
            except VsodHTTPError as error:
                delay = upload_retry_delay(error, time.monotonic() - start, wait_s)
                if delay is None:
                    raise
                time.sleep(delay)

    def job(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/jobs/{job_id}").json()

    def wait_job(self, job_id: str, timeout: float | None = 600.0, poll_s: float = 0.25,
                 progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Poll until the job is done (its status) or failed (JobFailed); TimeoutError after `timeout`."""
        start = time.monotonic()
        while True:
            status = self.job(job_id)
            if progress is not None:
                progress(status)
            if job_finished(status, time.monotonic() - start, timeout):
                return status
            time.sleep(poll_s)

    def job_result(self, job_id: str, format: str = "npz") -> bytes:
        """The finished job's result as bytes: npz, zip (PNG masks) or mp4 (mask video)."""
        return self._request("GET", f"/v1/jobs/{job_id}/result", params={"format": format}).content

    def delete_job(self, job_id: str) -> None:
        """Cancel a queued or running job, or free a finished one's result now (it counts against the key's quota)."""
        self._request("DELETE", f"/v1/jobs/{job_id}")

    def process_clip(self, path: str | Path, format: ResultFormat = "npz", timeout: float | None = 600.0,
                     progress: Callable[[dict[str, Any]], None] | None = None) -> np.ndarray:
        """Upload a clip (waiting out a busy server within `timeout`), wait for its job, fetch its
        masks: uint8 (T,H,W), frames in order."""
        job_id = self.submit_clip(path, wait_s=timeout if timeout is not None else float("inf"))["job_id"]
        self.wait_job(job_id, timeout, progress=progress)
        return decode_result(self.job_result(job_id, format), format)

    # -- sessions and live streams -------------------------------------------------------------------
    def session(self, session_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/sessions/{session_id}").json()

    def delete_session(self, session_id: str) -> None:
        self._request("DELETE", f"/v1/sessions/{session_id}")

    def open_stream(self, session_id: str | None = None, encoding: Encoding = "png", quality: int = 90,
                    threshold: float | None = None, retries: int = 5, max_fps: float | None = None) -> LiveStream:
        """A live session, frame by frame: `with client.open_stream("cam") as live: live.send(frame)`."""
        return LiveStream(self, session_id, encoding, quality, threshold, retries, max_fps)

    def stream(self, frames: Iterable[np.ndarray], session_id: str | None = None, encoding: Encoding = "png",
               quality: int = 90, threshold: float | None = None, retries: int = 5,
               max_fps: float | None = None) -> Iterator[np.ndarray | None]:
        """One mask per frame, in order, through `/v1/stream`, reconnecting and resuming on drops.

        A mask is None only where a connection dropped after the server had processed the frame
        but before its mask arrived (rare; see StreamResult.lost). Pass your own `session_id` to
        continue a session later, from this or another process. `max_fps` paces the frames: keep
        it at or below the server's VSOD_MAX_STREAM_FPS, whose excess frames go unanswered.
        """
        with self.open_stream(session_id, encoding, quality, threshold, retries, max_fps) as live:
            for frame in frames:
                yield live.send(frame).mask


class LiveStream(CursorView):
    """One session on `/v1/stream` in lockstep, reconnecting (same session id) when the connection drops.

    The decisions (when to reconnect, resend, or report a lost mask) are `StreamCursor`'s plans
    (service/client_stream.py), shared with the asyncio client; this class only performs their I/O.
    """

    def __init__(self, client: VsodClient, session_id: str | None, encoding: Encoding = "png", quality: int = 90,
                 threshold: float | None = None, retries: int = 5, max_fps: float | None = None) -> None:
        self.client, self.encoding, self.quality = client, encoding, quality
        self.cursor = StreamCursor(client.base_url, session_id, threshold, retries, max_fps)
        self._ws: ClientConnection | None = None
        self._connection = ExitStack()  # the open connection's context
        self._last_send = 0.0
        self._run(self.cursor.connect(first=True))

    def __enter__(self) -> LiveStream:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def send(self, frame: np.ndarray) -> StreamResult:
        """Send one frame and wait for its mask; reconnects and resends when the connection drops."""
        return self._run(self.cursor.send(encode_frame(frame, self.encoding, self.quality)))

    def reset(self) -> None:
        """Forget the session's temporal context; the next frame is frame 0 again."""
        self._run(self.cursor.reset())

    def close(self) -> None:
        """Close the connection; the session's state stays on the server until its TTL."""
        self._run(self.cursor.drop())

    def _run(self, plan: Plan) -> Any:
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
                outcome = self._perform(action)
            except Exception as problem:  # noqa: BLE001 - the plan decides what each failure means
                error = problem

    def _perform(self, action: Action) -> Any:
        if isinstance(action, Open):
            # Entered as a context manager (websockets 17 deprecates bare connect()); Drop exits it.
            self._ws = self._connection.enter_context(connect(
                action.url, additional_headers=key_headers(self.client.api_key), max_size=None,
                open_timeout=self.client.timeout, close_timeout=2))
        elif isinstance(action, Receive):
            assert self._ws is not None
            return self._ws.recv(timeout=self.client.timeout)
        elif isinstance(action, (SendText, SendBytes)):
            assert self._ws is not None
            self._ws.send(action.text if isinstance(action, SendText) else action.data)
        elif isinstance(action, Pace):
            time.sleep(max(0.0, self._last_send + action.interval - time.monotonic()))
            self._last_send = time.monotonic()
        elif isinstance(action, Sleep):
            time.sleep(action.seconds)
        elif isinstance(action, Drop):
            with suppress(OSError, ConnectionClosed, RuntimeError):  # already broken: nothing to tell the server
                self._connection.close()
            self._ws = None
        return None
