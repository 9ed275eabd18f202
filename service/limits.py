"""Input limits checked before any expensive work: image and video headers, and a frame-rate bucket.

Decompression bombs: a few kilobytes of PNG or JPEG can claim 100000x100000 pixels, and the decoder
would allocate tens of gigabytes before failing. So the width and height are read from the header
(PNG IHDR, JPEG SOFn, BMP DIB header, WebP VP8/VP8L/VP8X; videos through the container's stream
header) and checked against `max_frame_side` before a single pixel is decoded. Data whose header is
none of these is refused as not an image, so no other decoder (TIFF, PPM, EXR...) behind
`cv2.imdecode` ever sees network input.

`FrameRate` is the per-stream limit: a token bucket checked before a frame is decoded, so a client
sending faster than allowed costs the server almost nothing for the excess.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av

from .formats import NOT_AN_IMAGE
from .video import VideoError, open_container

# JPEG start-of-frame markers (baseline, progressive, lossless...); C4, C8 and CC are other segments.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


class LimitExceeded(ValueError):
    """Input over a configured limit: HTTP 413, or a `frame_too_large` / `clip_too_long` stream error."""

    def __init__(self, message: str, code: str = "frame_too_large") -> None:
        super().__init__(message)
        self.code = code


def image_size(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) from the header alone; VideoError when it is no supported image."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return _valid("png", width, height)
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    if data[:2] == b"BM" and len(data) >= 26:
        (header_size,) = struct.unpack_from("<I", data, 14)
        if header_size == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
            width, height = struct.unpack_from("<HH", data, 18)
        else:
            width, height = struct.unpack_from("<ii", data, 18)  # height < 0: rows stored top-down
        return _valid("bmp", width, abs(height))
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        return _webp_size(data)
    raise VideoError(NOT_AN_IMAGE)


def _valid(kind: str, width: int, height: int) -> tuple[str, int, int]:
    if width <= 0 or height <= 0:
        raise VideoError(f"{NOT_AN_IMAGE}: its header says {width}x{height}")
    return kind, width, height


def _jpeg_size(data: bytes) -> tuple[str, int, int]:
    """Walk the marker segments up to the first start-of-frame (it precedes the scan data)."""
    index = 2
    while index + 4 <= len(data):
        if data[index] != 0xFF:
            break
        marker = data[index + 1]
        if marker == 0xFF:  # fill byte before a marker
            index += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            index += 2
            continue
        (length,) = struct.unpack_from(">H", data, index + 2)
        if marker in _SOF and index + 9 <= len(data):
            height, width = struct.unpack_from(">HH", data, index + 5)
            return _valid("jpeg", width, height)
        if marker in (0xD9, 0xDA) or length < 2:  # end of image or start of scan before any frame header
            break
        index += 2 + length
    raise VideoError(f"{NOT_AN_IMAGE}: a JPEG without a readable frame header")


def _webp_size(data: bytes) -> tuple[str, int, int]:
    chunk = data[12:16]
    if chunk == b"VP8X":  # extended: 24-bit width-1 and height-1
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
    elif chunk == b"VP8L" and data[20] == 0x2F:  # lossless: 14-bit width-1 and height-1
        bits = int.from_bytes(data[21:25], "little")
        width, height = 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    elif chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":  # lossy key frame
        width, height = (v & 0x3FFF for v in struct.unpack_from("<HH", data, 26))
    else:
        raise VideoError(f"{NOT_AN_IMAGE}: an unreadable WebP header")
    return _valid("webp", width, height)


def check_image(data: bytes, max_side: int) -> tuple[int, int]:
    """(width, height) of encoded image bytes, refused before decoding when a side is over `max_side`."""
    if not data:
        raise VideoError("empty image data")
    _, width, height = image_size(data)
    if max(width, height) > max_side:
        raise LimitExceeded(f"the image is {width}x{height}; the limit is {max_side} pixels a side")
    return width, height


# ---------------------------------------------------------------- videos


@dataclass(frozen=True)
class VideoHeader:
    width: int
    height: int
    frames: int | None  # from the container; None when it does not say
    seconds: float | None


def video_header(path: Path, name: str | None = None) -> VideoHeader:
    """The first video stream's size, frame count and duration from the container, decoding nothing.
    Opened through `open_container`'s demuxer allow-list; `name` stands for the file in messages."""
    name = name or path.name
    with open_container(path, name) as container:
        if not container.streams.video:
            raise VideoError(f"{name!r} has no video stream")
        stream = container.streams.video[0]
        seconds = None
        if stream.duration is not None and stream.time_base is not None:
            seconds = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            seconds = container.duration / av.time_base
        return VideoHeader(stream.codec_context.width, stream.codec_context.height, stream.frames or None, seconds)


def check_video(header: VideoHeader, max_side: int, max_frames: int, max_seconds: float) -> None:
    """Refuse a clip whose frames are too large or which is too long, before its job is queued."""
    if max(header.width, header.height) > max_side:
        raise LimitExceeded(f"the video is {header.width}x{header.height}; the limit is {max_side} pixels a side")
    if header.frames is not None and header.frames > max_frames:
        raise LimitExceeded(f"the video has {header.frames} frames; the limit is {max_frames}", "clip_too_long")
    if header.seconds is not None and header.seconds > max_seconds:
        raise LimitExceeded(f"the video lasts {header.seconds:.1f} s; the limit is {max_seconds:g} s", "clip_too_long")


# ---------------------------------------------------------------- frame rate


class FrameRate:
    """Token bucket: `rate` units a second on average (frames, or pixels with `allow(cost)`), bursts of
    up to `burst` (default: one second's worth)."""

    def __init__(self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.clock = rate, clock
        self.burst = max(1.0, burst if burst is not None else rate)
        self._tokens, self._last = self.burst, clock()

    def allow(self, cost: float = 1.0) -> bool:
        """Take `cost` tokens; False when the stream is over its rate (rate 0: no limit). One item
        costlier than the whole burst passes when the bucket is full, and leaves it in debt."""
        if self.rate <= 0:
            return True
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= min(cost, self.burst):
            self._tokens -= cost
            return True
        return False

    def reserve(self, cost: float) -> float:
        """Take `cost` tokens, going into debt if need be; returns the seconds to wait before using
        them (0: at once), so that what is used stays within the rate (rate 0: no limit)."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        wait = max(0.0, min(cost, self.burst) - self._tokens) / self.rate
        self._tokens -= cost
        return wait
