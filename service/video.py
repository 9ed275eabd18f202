"""Decode and encode video and images: frames in as uint8 HxWx3 RGB, masks out as PNG or video.

Inputs (`open_media`): a video file, a folder of frames (natural sort, names = file stems) or one
image. Each yields `(name, frame)` lazily, so a long clip is never held in memory. Problems with
the input raise `VideoError` (a ValueError) with a one-line message, before any frame is returned.

Videos are opened only through an allow-list of FFmpeg demuxers, chosen from the content, with the
`file` protocol alone (`open_container`). The writers (`MaskVideoWriter`, `OverlayVideoWriter`) live
in `service.video_writers`.

Why PyAV for video and OpenCV for still images:
- PyAV's wheel bundles FFmpeg with libx264 (H.264 mp4s that browsers play: service.video_writers).
  Reading through the same FFmpeg decodes the opencv-doc samples (msmpeg4, mpeg4, cinepak) frame
  for frame like cv2.VideoCapture, gives the stream's exact rational frame rate, and lets us
  honour phone rotation metadata.
- OpenCV's imdecode/imencode are the fastest PNG/JPEG codecs at hand and already a dependency.
"""

from __future__ import annotations

import errno
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import av
import cv2
import numpy as np

from .formats import IMAGE_SUFFIXES, NOT_AN_IMAGE, SUPPORTED_VIDEOS, VIDEO_DEMUXERS, VIDEO_SUFFIXES
from .model.processing import resize_image

# OpenCV's own log lines (such as "IHDR chunk shall be first" for a broken PNG) are switched off: each
# failure they describe reaches the user as this module's one-line VideoError or warning instead.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

# avformat options: a demuxer outside the list fails in avformat_open_input before its header is
# read, and only the file itself may be opened (no nested file, pipe, http or crypto protocol).
SAFE_OPEN = {"format_whitelist": ",".join(VIDEO_DEMUXERS), "protocol_whitelist": "file"}

Warn = Callable[[str], None]
MediaKind = Literal["video", "folder", "image"]


class VideoError(ValueError):
    """The input cannot be read as a video, a folder of frames or an image (one-line message)."""


class UnsupportedVideo(VideoError):
    """The file is not in an allowed video container (HTTP 415 for an upload)."""


def _warn_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


# ---------------------------------------------------------------- images as bytes


def decode_image_bytes(data: bytes) -> np.ndarray:
    """JPEG/PNG/BMP/WebP bytes -> uint8 HxWx3 RGB (gray and alpha images are converted)."""
    if not data:
        raise VideoError("empty image data")
    buffer = np.frombuffer(data, dtype=np.uint8)
    # IMREAD_COLOR also applies the EXIF orientation, so phone photos come out upright.
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if image is None:
        raise VideoError(NOT_AN_IMAGE)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


# libjpeg's DCT scaling, largest first: a scaled decode is a block average, like an area resize.
_JPEG_SCALES = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))


def decode_for_model(
    data: bytes, input_size: tuple[int, int], size: tuple[int, int], scaled: bool = False
) -> tuple[np.ndarray, tuple[int, int]]:
    """A frame decoded and resized to the model's (height, width) input, with its own (height, width).

    Equal to `resize_image(decode_image_bytes(data), input_size)`. With `scaled`, a JPEG at least
    twice the input size on both sides (`size`: the header's) is decoded at 1/2, 1/4 or 1/8 scale
    instead: libjpeg skips most of the inverse DCT (a 768x576 frame in ~40 % of the time), and the
    area resize after it would average most of that detail away anyway, but not all: the model's
    masks change about as much as from a lower JPEG quality (settings.py). A JPEG whose scaled
    decode does not come out at the header's size (rotated by its EXIF tag) is decoded in full.
    """
    height, width = size
    if scaled and data[:3] == b"\xff\xd8\xff":
        for factor, flag in _JPEG_SCALES:
            expected = (-(-height // factor), -(-width // factor))
            if min(expected) < max(input_size):  # never below the input on either side, rotated or not
                continue
            image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag)
            if image is None:
                raise VideoError(NOT_AN_IMAGE)
            if image.shape[:2] == expected:
                return resize_image(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), input_size), size
            break  # rotated by EXIF or a header that disagrees: decode in full below
    frame = decode_image_bytes(data)
    return resize_image(frame, input_size), (frame.shape[0], frame.shape[1])


_PNG_FILTER = [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB] if hasattr(cv2, "IMWRITE_PNG_FILTER") else []


def encode_png(image: np.ndarray) -> bytes:
    """A uint8 HxW mask (or an HxWx3 RGB image) -> PNG bytes."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError("encode_png needs a uint8 numpy array")
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif image.ndim != 2:
        raise ValueError(f"encode_png needs HxW or HxWx3, got shape {image.shape}")
    # Level 1: masks are smooth, so higher levels save little and cost several times the time. The
    # SUB filter alone (not libpng's per-row filter search) halves the time again on a 768x576 mask
    # and makes it smaller (1.9 ms and 47 KB vs 3.7 ms and 54 KB; bench/RESULTS.md).
    ok, encoded = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1, *_PNG_FILTER])
    if not ok:
        raise ValueError("PNG encoding failed")
    return encoded.tobytes()


def read_image(path: str | Path) -> np.ndarray:
    """One image file -> uint8 HxWx3 RGB; VideoError when it is missing or not an image."""
    path = Path(path)
    try:
        data = path.read_bytes()  # not cv2.imread: it fails silently on some non-ASCII paths
    except OSError as error:
        raise VideoError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        return decode_image_bytes(data)
    except VideoError:
        raise VideoError(f"{path} is not a readable image") from None


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write via a temporary file in the same folder and rename, so no half-written file remains."""
    path = Path(path)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ---------------------------------------------------------------- reading


@dataclass(frozen=True)
class MediaInfo:
    kind: MediaKind
    path: Path
    stem: str  # the input's name without suffix: names output files such as <stem>_mask.mp4
    fps: float | None  # None for folders and single images
    frame_count: int | None  # from the container for videos (may be approximate), exact otherwise
    size: tuple[int, int]  # (height, width) of the first frame


class MediaSource:
    """An opened input: `info` plus `frames()`, a lazy iterator of (name, RGB frame)."""

    def __init__(self, info: MediaInfo, frames: Callable[[], Iterator[tuple[str, np.ndarray]]],
                 close: Callable[[], None] = lambda: None) -> None:
        self.info = info
        self._frames = frames
        self._close = close

    def frames(self) -> Iterator[tuple[str, np.ndarray]]:
        return self._frames()

    def close(self) -> None:
        self._close()

    def __enter__(self) -> MediaSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def natural_key(name: str) -> list[int | str]:
    """'frame10' sorts after 'frame9': digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def open_media(path: str | Path, warn: Warn = _warn_stderr, name: str | None = None) -> MediaSource:
    """Open a folder of frames, one image or a video, told apart by the suffix (a video's container is then
    probed from its content); VideoError if it is none of them. `name` stands for the file in messages."""
    path = Path(path)
    if not path.exists():
        raise VideoError(f"input not found: {name or path}")
    if path.is_dir():
        return _open_folder(path, warn)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        frame = read_image(path)
        info = MediaInfo("image", path, path.stem, None, 1, frame.shape[:2])
        return MediaSource(info, lambda: iter([(path.stem, frame)]))
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return open_video(path, name)
    known = ", ".join(sorted(VIDEO_SUFFIXES | IMAGE_SUFFIXES))
    raise VideoError(f"unsupported input {path.name!r}: expected a video, an image ({known}) or a folder of frames")


def _open_folder(folder: Path, warn: Warn) -> MediaSource:
    # Hidden files are skipped: macOS leaves "._00001.jpg" resource forks beside real frames.
    files = sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")),
        key=lambda p: natural_key(p.name),
    )
    if not files:
        raise VideoError(f"no frames ({', '.join(sorted(IMAGE_SUFFIXES))}) in folder {folder}")
    seen: dict[str, Path] = {}
    for file in files:
        if file.stem in seen:  # their masks would overwrite each other
            raise VideoError(f"frames {seen[file.stem].name} and {file.name} in {folder} share the name {file.stem!r}")
        seen[file.stem] = file
    # The first readable frame fixes the reported size; a folder of only corrupt files is an error.
    first: tuple[int, np.ndarray] | None = None
    for index, file in enumerate(files):
        try:
            first = (index, read_image(file))
            break
        except VideoError as error:
            warn(f"skipping corrupt frame: {error}")
    if first is None:
        raise VideoError(f"no readable frames in folder {folder}")
    start, first_frame = first

    def frames() -> Iterator[tuple[str, np.ndarray]]:
        yield files[start].stem, first_frame
        for file in files[start + 1 :]:
            try:
                yield file.stem, read_image(file)
            except VideoError as error:
                warn(f"skipping corrupt frame: {error}")

    info = MediaInfo("folder", folder, folder.name, None, len(files) - start, first_frame.shape[:2])
    return MediaSource(info, frames)


def open_container(path: Path, name: str | None = None) -> av.container.InputContainer:
    """The file opened by FFmpeg through `SAFE_OPEN`: UnsupportedVideo when its content is no allowed
    container, VideoError when it is one but unreadable. `name` stands for the file in messages."""
    name = name or str(path)
    try:
        return av.open(str(path), options=SAFE_OPEN)
    except av.FFmpegError as error:
        if getattr(error, "errno", None) == errno.EINVAL:  # the probed demuxer is not on the whitelist
            raise UnsupportedVideo(f"{name!r} is not a video in a supported container ({SUPPORTED_VIDEOS})") from None
        raise VideoError(f"cannot open video {name!r}: {_ffmpeg_reason(error)}") from None


def open_video(path: str | Path, name: str | None = None) -> MediaSource:
    """A video file (container probed from its content, see `open_container`), first frame decoded."""
    path = Path(path)
    name = name or str(path)
    container = open_container(path, name)
    try:
        if not container.streams.video:
            raise VideoError(f"{name!r} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame-parallel decoding; output order is unchanged
        decoded = _decode(container, stream, name)
        first = next(decoded, None)
        if first is None:
            raise VideoError(f"{name!r} contains no decodable video frames")
    except BaseException:
        container.close()
        raise
    rate = stream.average_rate or stream.guessed_rate
    info = MediaInfo("video", path, Path(name).stem, float(rate) if rate else None, stream.frames or None, first.shape[:2])

    def frames() -> Iterator[tuple[str, np.ndarray]]:
        yield f"{0:05d}", first
        for index, frame in enumerate(decoded, start=1):
            yield f"{index:05d}", frame

    return MediaSource(info, frames, container.close)


def _decode(container: av.container.InputContainer, stream: av.video.stream.VideoStream, name: str) -> Iterator[np.ndarray]:
    index = 0
    try:
        for frame in container.decode(stream):
            image = frame.to_ndarray(format="rgb24")
            # Phones store portrait video as landscape plus a display rotation; apply it as
            # players (and cv2.VideoCapture) do, so masks match what the user sees.
            if turns := round((getattr(frame, "rotation", 0) or 0) / 90) % 4:  # PyAV >= 13
                image = np.ascontiguousarray(np.rot90(image, turns))
            yield image
            index += 1
    except av.FFmpegError as error:
        raise VideoError(f"decoding {name!r} failed after {index} frames: {_ffmpeg_reason(error)}") from None


def _ffmpeg_reason(error: av.FFmpegError) -> str:
    return str(getattr(error, "strerror", None) or error).splitlines()[0]
