"""Python client for a vsod server: live streams, clip jobs and still images (httpx + websockets).

    from service.client import VsodClient

    with VsodClient("http://127.0.0.1:8000") as client:
        masks = list(client.stream(frames, session_id="camera-1"))  # live: temporal context kept
        masks = client.process_clip("clip.mp4")                      # upload, wait, fetch: (T,H,W)
        mask = client.segment_image(frame)                           # one still image, no state

Frames are uint8 HxWx3 RGB arrays; masks are uint8 HxW (0..255 saliency) at the frame's size.

Streams run in lockstep (the next frame goes out when the previous mask arrived), so the server
never has to drop a frame. When the connection drops, the stream reconnects with the same
session id and continues from the frame index the server reports: the temporal state lives in the
server's session cache, not in the connection, so another replica sharing the Redis can take over.
Server problems raise `VsodError` subclasses carrying the server's own message.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import cv2
import httpx
import numpy as np
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect

Encoding = Literal["png", "jpeg"]
# Close codes that mean "do not come back with the same request": policy (bad id, refused key).
FINAL_CLOSE_CODES = frozenset({1008, 4401, 4403})


class VsodError(Exception):
    """Any problem the server reported, or a server that could not be reached."""


class VsodHTTPError(VsodError):
    """An HTTP error status; `detail` is the server's message."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status, self.detail = status, detail


class StreamError(VsodError):
    """A `{"type":"error"}` message on the stream (e.g. `frame_too_large`), or a refused connection."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


class JobFailed(VsodError):
    """The clip job failed on the server; `job` is its last status."""

    def __init__(self, job: dict[str, Any]) -> None:
        super().__init__(f"job {job.get('job_id')} failed: {job.get('error')}")
        self.job = job


class VsodConnectionError(VsodError):
    """The server could not be reached (after the allowed reconnection attempts)."""


@dataclass
class StreamResult:
    """One streamed frame's answer."""

    frame: int  # the frame's index in its session
    mask: np.ndarray | None  # None only when `lost`
    latency_ms: float | None = None  # arrival at the server to mask, as the server measured it
    dropped: int = 0  # frames of the session the server dropped so far (0 in lockstep)
    restarted: str | None = None  # why the temporal context restarted at this frame, if it did
    # The connection dropped after the server had processed the frame but before its mask came
    # back: the frame's effect on the temporal state is kept, its mask cannot be fetched again.
    lost: bool = False


# ---------------------------------------------------------------- helpers shared with the async client


def check_frame(frame: np.ndarray) -> np.ndarray:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        got = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise ValueError(f"a frame must be a uint8 HxWx3 RGB array, got {got}")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(f"a frame must not be empty, got shape {frame.shape}")
    return frame


def encode_frame(frame: np.ndarray, encoding: Encoding = "png", quality: int = 90) -> bytes:
    """RGB array -> PNG (lossless, the default) or JPEG bytes, as the server expects them."""
    bgr = cv2.cvtColor(check_frame(frame), cv2.COLOR_RGB2BGR)
    if encoding == "png":
        ok, data = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    elif encoding == "jpeg":
        ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    else:
        raise ValueError(f"encoding must be 'png' or 'jpeg', got {encoding!r}")
    if not ok:
        raise ValueError("the frame could not be encoded")
    return data.tobytes()


def ws_base(base_url: str) -> str:
    if base_url.startswith("https://"):
        return "wss://" + base_url[len("https://"):]
    if base_url.startswith("http://"):
        return "ws://" + base_url[len("http://"):]
    raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")


def stream_url(base_url: str, session_id: str | None) -> str:
    query = f"?session_id={quote(session_id, safe='')}" if session_id else ""
    return f"{ws_base(base_url.rstrip('/'))}/v1/stream{query}"


def detail_of(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if detail is None:
        return response.text[:300] or response.reason_phrase
    return detail if isinstance(detail, str) else json.dumps(detail)


def checked(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        raise VsodHTTPError(response.status_code, detail_of(response))
    return response


def decode_result(data: bytes, fmt: str) -> np.ndarray:
    """A job's npz or zip result -> uint8 masks (T,H,W)."""
    if fmt == "npz":
        with np.load(io.BytesIO(data)) as archive:
            return archive["masks"]
    if fmt == "zip":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = sorted(archive.namelist())
            return np.stack([cv2.imdecode(np.frombuffer(archive.read(n), np.uint8), cv2.IMREAD_UNCHANGED) for n in names])
    raise ValueError(f"masks come from format 'npz' or 'zip'; fetch {fmt!r} with job_result()")


def resume_gap(expected: int, server_next: int) -> Literal["resend", "lost", "restarted"]:
    """What a reconnection found, for the frame the client sent as session frame `expected`.

    resend: the server never processed it. lost: it did, but its mask never came back.
    restarted: the server's session is elsewhere (expired, reset): its temporal context restarts.
    """
    if server_next == expected:
        return "resend"
    if server_next == expected + 1:
        return "lost"
    return "restarted"


def parse_mask(header: dict[str, Any], body: bytes) -> np.ndarray:
    height, width = int(header["height"]), int(header["width"])
    if len(body) != height * width:
        raise StreamError("bad_mask", f"expected {height}x{width} raw mask bytes, got {len(body)}")
    return np.frombuffer(body, np.uint8).reshape(height, width).copy()


def backoff_s(attempt: int) -> float:
    return min(2.0, 0.1 * 2**attempt)


# ---------------------------------------------------------------- the synchronous client


class VsodClient:
    """A vsod server at `base_url` (http://host:port); `api_key` is sent when the server wants one."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        ws_base(self.base_url)  # a bad URL fails here, not at the first call
        self.api_key, self.timeout = api_key, timeout
        headers = {"X-API-Key": api_key} if api_key else {}
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

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
        """/readyz: model id, device, cache backend (VsodHTTPError 503 with the reason when not ready)."""
        return self._request("GET", "/readyz").json()

    def models(self) -> dict[str, Any]:
        return self._request("GET", "/v1/models").json()

    # -- images ----------------------------------------------------------------------------------
    def segment_image(self, image: np.ndarray | bytes | str | Path, threshold: float | None = None) -> np.ndarray:
        """One still image (RGB array, encoded bytes or a file path) -> its mask; no temporal state."""
        if isinstance(image, (str, Path)):
            image = Path(image).read_bytes()
        data = image if isinstance(image, bytes) else encode_frame(image)
        params: dict[str, Any] = {"format": "raw"}
        if threshold is not None:
            params["threshold"] = threshold
        response = self._request("POST", "/v1/images", params=params,
                                 files={"file": ("image", data, "application/octet-stream")})
        height, width = int(response.headers["X-Mask-Height"]), int(response.headers["X-Mask-Width"])
        return np.frombuffer(response.content, np.uint8).reshape(height, width).copy()

    # -- clips -----------------------------------------------------------------------------------
    def submit_clip(self, path: str | Path) -> dict[str, Any]:
        """Upload a video; returns the job (`job_id`, `status`, `frames_total`...)."""
        path = Path(path)
        with path.open("rb") as handle:
            return self._request("POST", "/v1/clips", files={"file": (path.name, handle, "application/octet-stream")}).json()

    def job(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/jobs/{job_id}").json()

    def wait_job(self, job_id: str, timeout: float | None = 600.0, poll_s: float = 0.25,
                 progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Poll until the job is done (its status) or failed (JobFailed); TimeoutError after `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.job(job_id)
            if progress is not None:
                progress(status)
            if status["status"] == "done":
                return status
            if status["status"] == "failed":
                raise JobFailed(status)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {status['status']} after {timeout:g} s "
                                   f"({status['frames_done']}/{status['frames_total']} frames)")
            time.sleep(poll_s)

    def job_result(self, job_id: str, format: str = "npz") -> bytes:
        """The finished job's result as bytes: npz, zip (PNG masks) or mp4 (mask video)."""
        return self._request("GET", f"/v1/jobs/{job_id}/result", params={"format": format}).content

    def process_clip(self, path: str | Path, format: Literal["npz", "zip"] = "npz", timeout: float | None = 600.0,
                     progress: Callable[[dict[str, Any]], None] | None = None) -> np.ndarray:
        """Upload a clip, wait for its job, fetch its masks: uint8 (T,H,W), frames in order."""
        job_id = self.submit_clip(path)["job_id"]
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


class LiveStream:
    """One session on `/v1/stream` in lockstep, reconnecting (same session id) when the connection drops.

    `next_frame` is the session index the next frame will get; it follows the server's word after
    each reconnection, so a frame is never counted twice nor skipped.
    """

    def __init__(self, client: VsodClient, session_id: str | None, encoding: Encoding = "png", quality: int = 90,
                 threshold: float | None = None, retries: int = 5, max_fps: float | None = None) -> None:
        self.client, self.session_id = client, session_id
        self.encoding, self.quality, self.threshold, self.retries = encoding, quality, threshold, retries
        self.interval = 1.0 / max_fps if max_fps else 0.0
        self._last_send = 0.0
        self.next_frame = 0
        self.model: str | None = None
        self.reconnects = 0
        self._ws: ClientConnection | None = None
        self._note: str | None = None  # a restart the next result should report
        self._connect(first=True)

    def __enter__(self) -> LiveStream:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- connection --------------------------------------------------------------------------------
    def _connect(self, first: bool = False) -> None:
        """Connect (retrying with backoff) and read the session message; then ask for raw masks."""
        url = stream_url(self.client.base_url, self.session_id)
        headers = {"X-API-Key": self.client.api_key} if self.client.api_key else None  # kept out of URLs and logs
        failures = 0
        while True:
            try:
                with ExitStack() as stack:  # closes the connection unless the hello goes through
                    # As a context manager: websockets 17 warns about bare connect() calls.
                    ws = stack.enter_context(connect(url, additional_headers=headers, max_size=None,
                                                     open_timeout=self.client.timeout, close_timeout=2))
                    hello = self._json(ws)
                    if hello.get("type") == "error":
                        if hello.get("code") == "shutting_down":  # a replica going away: try again
                            raise ConnectionError(str(hello.get("message")))
                        raise StreamError(str(hello.get("code")), str(hello.get("message")))
                    ws.send(json.dumps({"type": "config", "format": "raw", "threshold": self.threshold}))
                    ack = self._json(ws)
                    if ack.get("type") != "config":
                        raise StreamError(str(ack.get("code", "bad_config")), str(ack.get("message", ack)))
                    stack.pop_all()
                break
            except InvalidStatus as error:  # the handshake was refused over HTTP (e.g. 401/403)
                raise VsodHTTPError(error.response.status_code, error.response.body.decode(errors="replace")[:300]) from error
            except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed) as error:
                if isinstance(error, ConnectionClosed) and error.rcvd is not None and error.rcvd.code in FINAL_CLOSE_CODES:
                    raise StreamError("closed", f"the server closed the stream: {error.rcvd.code} {error.rcvd.reason}") from error
                if failures >= self.retries:
                    raise VsodConnectionError(f"cannot stream to {url}: {error}") from error
                time.sleep(backoff_s(failures))
                failures += 1
        expected = self.next_frame
        self._ws, self.session_id, self.model = ws, str(hello["session_id"]), hello.get("model")
        self.next_frame = int(hello["frame"])
        self._note = hello.get("restarted")
        if not first:
            self.reconnects += 1
            if resume_gap(expected, self.next_frame) == "restarted" and self._note is None:
                self._note = (f"reconnected: the server's session is at frame {self.next_frame}, not {expected}; "
                              "temporal context restarted")

    def _json(self, ws: ClientConnection) -> dict[str, Any]:
        message = ws.recv(timeout=self.client.timeout)
        if not isinstance(message, str):
            raise StreamError("protocol", f"expected a JSON text message, got {len(message)} bytes")
        return json.loads(message)

    def _drop_connection(self) -> None:
        if self._ws is not None:
            try:
                self._ws.close()
            except Exception:  # already broken: nothing to tell the server
                pass
            self._ws = None

    # -- frames --------------------------------------------------------------------------------------
    def send(self, frame: np.ndarray) -> StreamResult:
        """Send one frame and wait for its mask; reconnects and resends when the connection drops."""
        data = encode_frame(frame, self.encoding, self.quality)
        failures = 0
        while True:
            if self._ws is None:
                expected = self.next_frame
                self._connect()
                if resume_gap(expected, self.next_frame) == "lost":
                    return StreamResult(expected, None, restarted=self._take_note(), lost=True)
            try:
                if self.interval:
                    time.sleep(max(0.0, self._last_send + self.interval - time.monotonic()))
                    self._last_send = time.monotonic()
                self._ws.send(data)  # type: ignore[union-attr]
                header, body = self._receive_mask()
            except (ConnectionClosed, OSError, TimeoutError) as error:
                if isinstance(error, ConnectionClosed) and error.rcvd is not None and error.rcvd.code in FINAL_CLOSE_CODES:
                    raise StreamError("closed", f"the server closed the stream: {error.rcvd.code} {error.rcvd.reason}") from error
                self._drop_connection()
                if failures >= self.retries:
                    raise VsodConnectionError(f"the stream kept dropping: {error}") from error
                failures += 1
                continue
            self.next_frame = int(header["frame"]) + 1
            note = header.get("restarted") or self._take_note()
            return StreamResult(int(header["frame"]), parse_mask(header, body), header.get("latency_ms"),
                                int(header.get("dropped", 0)), note)

    def _take_note(self) -> str | None:
        note, self._note = self._note, None
        return note

    def _receive_mask(self) -> tuple[dict[str, Any], bytes]:
        assert self._ws is not None
        while True:
            message = self._json(self._ws)
            if message.get("type") == "error":
                raise StreamError(str(message.get("code")), str(message.get("message")))
            if message.get("type") == "mask":
                body = self._ws.recv(timeout=self.client.timeout)
                if not isinstance(body, bytes):
                    raise StreamError("protocol", "expected the mask's bytes after its header")
                return message, body

    def reset(self) -> None:
        """Forget the session's temporal context; the next frame is frame 0 again."""
        if self._ws is None:
            self._connect()
        assert self._ws is not None
        self._ws.send(json.dumps({"type": "reset"}))
        while (message := self._json(self._ws)).get("type") != "reset":
            if message.get("type") == "error":
                raise StreamError(str(message.get("code")), str(message.get("message")))
        self.next_frame = 0

    def close(self) -> None:
        """Close the connection; the session's state stays on the server until its TTL."""
        self._drop_connection()
