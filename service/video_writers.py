"""Write videos: masks, or frames with their masks tinted over them, as H.264 mp4s.

Why PyAV: its wheel bundles FFmpeg with libx264, so these writers produce H.264 (yuv420p,
+faststart) mp4s that browsers and phones play; opencv-python-headless's VideoWriter only offers
MPEG-4 Part 2 ("mp4v") in mp4, which browsers refuse.
"""

from __future__ import annotations

import contextlib
import os
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

__all__ = ["DEFAULT_FPS", "MaskVideoWriter", "OverlayVideoWriter", "overlay"]

DEFAULT_FPS = 25.0  # for folders of frames, which carry no frame rate of their own


def overlay(frame: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (255, 0, 0), strength: float = 0.6) -> np.ndarray:
    """Tint `frame` towards `color` in proportion to the saliency in `mask` (same height and width)."""
    if frame.shape[:2] != mask.shape[:2]:
        mask = cv2.resize(mask, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_LINEAR)
    alpha = mask.astype(np.float32)[..., None] * (strength / 255.0)
    tinted = frame.astype(np.float32) * (1.0 - alpha) + np.asarray(color, np.float32) * alpha
    return np.clip(np.rint(tinted), 0, 255).astype(np.uint8)


def _video_rate(fps: float | None) -> Fraction:
    # 2997/125 (23.976) or 30000/1001 survive; float noise in container rates does not.
    return Fraction(fps if fps and fps > 0 else DEFAULT_FPS).limit_denominator(1001)


class _H264Writer:
    """Frames of one fixed size -> an mp4 written to a temporary name and renamed on close.

    H.264/yuv420p needs even dimensions: odd sizes are padded by one replicated row/column, as
    ffmpeg's usual `pad=ceil(iw/2)*2:ceil(ih/2)*2` does. Later frames of another size (folders
    may mix sizes) are resized to the first frame's size.
    """

    pixel_format = "rgb24"

    def __init__(self, path: str | Path, fps: float | None = None, crf: int = 18) -> None:
        self.path = Path(path)
        self.rate = _video_rate(fps)
        self.crf = crf
        self.frames_written = 0
        self._tmp = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        self._container: av.container.OutputContainer | None = None
        self._stream: av.video.stream.VideoStream | None = None
        self._size: tuple[int, int] | None = None

    def _open(self, height: int, width: int) -> None:
        self._size = (height, width)
        self._container = av.open(str(self._tmp), "w", format="mp4", container_options={"movflags": "+faststart"})
        try:
            # The PyAV wheel bundles libx264; a build without it still writes a playable mp4 with mpeg4.
            stream = self._container.add_stream("libx264", rate=self.rate, options={"crf": str(self.crf), "preset": "veryfast"})
        except (av.FFmpegError, ValueError):
            stream = self._container.add_stream("mpeg4", rate=self.rate, options={"qscale": "2"})
        stream.width, stream.height = width + width % 2, height + height % 2
        stream.pix_fmt = "yuv420p"
        self._stream = stream

    def write(self, image: np.ndarray) -> None:
        if self._container is None:
            self._open(*image.shape[:2])
        assert self._container is not None and self._stream is not None and self._size is not None
        height, width = self._size
        if image.shape[:2] != (height, width):
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        if height % 2 or width % 2:
            pad = ((0, height % 2), (0, width % 2)) + ((0, 0),) * (image.ndim - 2)
            image = np.pad(image, pad, mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format=self.pixel_format)
        frame.pts = self.frames_written
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        """Flush and publish the file (an empty writer writes nothing)."""
        if self._container is None:
            return
        assert self._stream is not None
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Drop the partial file (an interrupted run leaves no truncated video behind)."""
        if self._container is not None:
            with contextlib.suppress(av.FFmpegError):
                self._container.close()
            self._container = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> _H264Writer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class MaskVideoWriter(_H264Writer):
    """8-bit masks (HxW uint8) as a gray-looking H.264 video."""

    pixel_format = "gray"

    def write(self, mask: np.ndarray) -> None:  # type: ignore[override]
        if mask.dtype != np.uint8 or mask.ndim != 2:
            raise ValueError(f"a mask must be HxW uint8, got {mask.dtype} {mask.shape}")
        super().write(mask)


class OverlayVideoWriter(_H264Writer):
    """Frames with their masks tinted over them (see `overlay`), as an H.264 video."""

    def __init__(self, path: str | Path, fps: float | None = None, crf: int = 20,
                 color: tuple[int, int, int] = (255, 0, 0), strength: float = 0.6) -> None:
        super().__init__(path, fps, crf)
        self.color = color
        self.strength = strength

    def write(self, frame: np.ndarray, mask: np.ndarray) -> None:  # type: ignore[override]
        super().write(overlay(frame, mask, self.color, self.strength))
