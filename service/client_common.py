"""What the synchronous and asyncio clients share over HTTP: exceptions, results, encoding and decoding.
The live stream's shared part is service/client_stream.py."""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import httpx
import numpy as np

Encoding = Literal["png", "jpeg"]
ResultFormat = Literal["npz", "zip"]


class VsodError(Exception):
    """Any problem the server reported, or a server that could not be reached."""


class VsodHTTPError(VsodError):
    """An HTTP error status; `detail` is the server's message, `retry_after` its Retry-After seconds
    (429 over a quota, 503 while loading), if it sent one."""

    def __init__(self, status: int, detail: str, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status, self.detail, self.retry_after = status, detail, retry_after


class StreamError(VsodError):
    """A `{"type":"error"}` message on the stream (e.g. `frame_too_large`), or a refused stream."""

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
    mask: np.ndarray | None  # uint8 HxW; None only when `lost`
    latency_ms: float | None = None  # arrival at the server to mask, as the server measured it
    dropped: int = 0  # frames of the session the server dropped so far (0 in lockstep)
    restarted: str | None = None  # why the temporal context restarted at this frame, if it did
    # The connection dropped after the server had processed the frame but before its mask came
    # back: the frame's effect on the temporal state is kept, its mask cannot be fetched again.
    lost: bool = False
    temporal: bool = True  # False when the server could not use its session store for this frame


# ---------------------------------------------------------------- frames, URLs, HTTP


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


def image_bytes(image: np.ndarray | bytes | str | Path) -> bytes:
    """An RGB array (sent as PNG), already encoded bytes, or a file path."""
    if isinstance(image, (str, Path)):
        return Path(image).read_bytes()
    return image if isinstance(image, bytes) else encode_frame(image)


def image_params(threshold: float | None) -> dict[str, Any]:
    return {"format": "raw"} if threshold is None else {"format": "raw", "threshold": threshold}


def raw_mask(response: httpx.Response) -> np.ndarray:
    height, width = int(response.headers["X-Mask-Height"]), int(response.headers["X-Mask-Width"])
    return np.frombuffer(response.content, np.uint8).reshape(height, width).copy()


def ws_base(base_url: str) -> str:
    if base_url.startswith("https://"):
        return "wss://" + base_url[len("https://"):]
    if base_url.startswith("http://"):
        return "ws://" + base_url[len("http://"):]
    raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")


def key_headers(api_key: str | None) -> dict[str, str]:
    """The key goes in a header, for the WebSocket too: it stays out of URLs and access logs."""
    return {"X-API-Key": api_key} if api_key else {}


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
        raise VsodHTTPError(response.status_code, detail_of(response), _retry_after(response))
    return response


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers["Retry-After"]))
    except (KeyError, ValueError):  # absent, or an HTTP date, which this server never sends
        return None


def upload_retry_delay(error: VsodHTTPError, waited_s: float, wait_s: float) -> float | None:
    """How long to wait before offering a refused upload again, or None to give up: only a server
    that is busy (429 over a quota, 503 not ready) and says when to come back, within `wait_s`."""
    if error.status not in (429, 503) or error.retry_after is None:
        return None
    return error.retry_after if waited_s + error.retry_after <= wait_s else None


def job_finished(status: dict[str, Any], waited_s: float, timeout: float | None) -> bool:
    """True when done; JobFailed when failed; TimeoutError past `timeout`; else False (poll again)."""
    if status["status"] == "done":
        return True
    if status["status"] == "failed":
        raise JobFailed(status)
    if timeout is not None and waited_s > timeout:
        raise TimeoutError(f"job {status['job_id']} still {status['status']} after {timeout:g} s "
                           f"({status['frames_done']}/{status['frames_total']} frames)")
    return False


def decode_result(data: bytes, fmt: str) -> np.ndarray:
    """A job's npz or zip result -> uint8 masks (T,H,W)."""
    if fmt == "npz":
        with np.load(io.BytesIO(data)) as archive:
            return archive["masks"]
    if fmt == "zip":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            masks = []
            for name in sorted(archive.namelist()):
                mask = cv2.imdecode(np.frombuffer(archive.read(name), np.uint8), cv2.IMREAD_UNCHANGED)
                if mask is None:
                    raise ValueError(f"{name} in the masks zip is not a readable image")
                masks.append(mask)
            return np.stack(masks)
    raise ValueError(f"masks come from format 'npz' or 'zip'; fetch {fmt!r} with job_result()")
