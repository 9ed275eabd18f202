"""Media for the browser test: a synthetic clip as a .y4m file, which Chromium's fake camera plays in a loop."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def synthetic_frames(count: int = 24, size: tuple[int, int] = (240, 320), seed: int = 7) -> list[np.ndarray]:
    """Frames of one synthetic clip (textured scene, moving salient objects) as uint8 RGB."""
    from distill.data.synthetic import (  # test helper: `service` never imports distill
        render_frame,
        sample_scene,
    )

    scene = sample_scene(np.random.default_rng(seed), size, count)
    return [render_frame(scene, t)[0] for t in range(count)]


def write_y4m(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    """YUV4MPEG2, 4:2:0 (the layout Chromium's file capture reads): a header, then FRAME + I420 planes."""
    height, width = frames[0].shape[:2]
    if height % 2 or width % 2:
        raise ValueError(f"4:2:0 needs even sides, got {width}x{height}")
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            out.write(b"FRAME\n")
            out.write(cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420).tobytes())  # Y, then U, then V
    return path


def write_h264(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    """An H.264/yuv420p mp4 (PyAV), which the browser can also preview, unlike MJPG or mpeg4 files."""
    import av

    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "20", "preset": "veryfast"})
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path
