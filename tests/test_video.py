"""service.video on real files: writers and readers round-trip, folders, images, bad input."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from service.model.processing import resize_image
from service.video import (
    VideoError,
    decode_for_model,
    decode_image_bytes,
    encode_png,
    natural_key,
    open_media,
    write_atomic,
)
from service.video_writers import MaskVideoWriter, OverlayVideoWriter, overlay
from tests.servers import write_clip

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


def gradient_masks(count: int, height: int, width: int) -> list[np.ndarray]:
    """Smooth masks that differ per frame, so a lossy codec keeps them recognisable."""
    _ys, xs = np.mgrid[0:height, 0:width]
    return [((xs * 255 // (width - 1) + 40 * i) % 256).astype(np.uint8) for i in range(count)]


def save_rgb(path: Path, frame: np.ndarray) -> None:
    assert cv2.imwrite(str(path), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))


def test_mask_video_round_trip(tmp_path: Path) -> None:
    masks = gradient_masks(6, 48, 64)
    path = tmp_path / "masks.mp4"
    with MaskVideoWriter(path, fps=12.5) as writer:
        for mask in masks:
            writer.write(mask)
    assert writer.frames_written == 6
    assert not list(tmp_path.glob(".*partial*")), "the temporary file is renamed away"
    with open_media(path) as source:
        assert source.info.kind == "video"
        assert source.info.size == (48, 64)
        assert source.info.fps == pytest.approx(12.5)
        assert source.info.frame_count == 6
        frames = list(source.frames())
    assert [name for name, _ in frames] == ["00000", "00001", "00002", "00003", "00004", "00005"]
    for (_, frame), mask in zip(frames, masks, strict=True):
        assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
        # H.264 is lossy; at crf 18 a smooth gray ramp comes back within a few levels.
        assert np.abs(frame[..., 0].astype(int) - mask).mean() < 6
    with av.open(str(path)) as container:  # broadly playable: H.264 in 4:2:0
        stream = container.streams.video[0]
        assert stream.codec_context.name in {"h264", "mpeg4"}
        assert stream.codec_context.pix_fmt == "yuv420p"


def test_overlay_video_and_odd_size(tmp_path: Path) -> None:
    frame = np.full((37, 51, 3), 200, np.uint8)
    mask = np.zeros((37, 51), np.uint8)
    mask[:, 25:] = 255
    path = tmp_path / "overlay.mp4"
    with OverlayVideoWriter(path, fps=10) as writer:
        for _ in range(3):
            writer.write(frame, mask)
    with open_media(path) as source:
        frames = [f for _, f in source.frames()]
    assert len(frames) == 3
    # 4:2:0 needs even sizes: one edge-replicated row and column are added.
    assert frames[0].shape == (38, 52, 3)
    left, right = frames[0][:, :20].mean(axis=(0, 1)), frames[0][:, 32:].mean(axis=(0, 1))
    assert abs(left - 200).max() < 8  # untouched where the mask is 0
    assert right[0] > right[1] + 60 and right[0] > right[2] + 60  # tinted red where salient


def test_overlay_blend() -> None:
    frame = np.full((4, 4, 3), 100, np.uint8)
    mask = np.array([[0, 255, 0, 255]] * 4, np.uint8)
    tinted = overlay(frame, mask, color=(255, 0, 0), strength=0.5)
    assert tinted[0, 0].tolist() == [100, 100, 100]
    assert tinted[0, 1].tolist() == [178, 50, 50]


def test_aborted_writer_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "cut.mp4"
    with pytest.raises(RuntimeError), MaskVideoWriter(path, fps=10) as writer:
        writer.write(np.zeros((16, 16), np.uint8))
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_folder_natural_order_and_corrupt_frame(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for index in (1, 2, 10, 3):
        save_rgb(tmp_path / f"frame{index}.png", rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
    (tmp_path / "frame4.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (tmp_path / "._frame1.png").write_bytes(b"macOS resource fork")  # hidden: ignored
    (tmp_path / "notes.txt").write_text("not a frame")
    warnings: list[str] = []
    with open_media(tmp_path, warn=warnings.append) as source:
        assert source.info.kind == "folder"
        assert source.info.size == (20, 30)
        names = [name for name, _ in source.frames()]
    assert names == ["frame1", "frame2", "frame3", "frame10"]
    assert len(warnings) == 1 and "frame4.jpg" in warnings[0]


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(VideoError, match="no frames"):
        open_media(tmp_path)
    (tmp_path / "a.jpg").write_bytes(b"junk")
    warnings: list[str] = []
    with pytest.raises(VideoError, match="no readable frames"):
        open_media(tmp_path, warn=warnings.append)
    assert warnings
    save_rgb(tmp_path / "b.png", np.zeros((8, 8, 3), np.uint8))
    save_rgb(tmp_path / "b.jpg", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(VideoError, match="share the name"):
        open_media(tmp_path, warn=warnings.append)


def test_animated_gif_is_a_clip_and_webp_frames_are_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    frames = [np.repeat(rng.integers(0, 256, (1, 1, 3), dtype=np.uint8), 20 * 30, 0).reshape(20, 30, 3) for _ in range(4)]
    write_clip(tmp_path / "anim.gif", frames)
    with open_media(tmp_path / "anim.gif") as source:
        assert source.info.kind == "video" and source.info.size == (20, 30)
        decoded = [frame for _, frame in source.frames()]
    assert len(decoded) == 4  # flat colours survive the GIF palette
    assert all(np.abs(got.astype(int) - want).max() <= 8 for got, want in zip(decoded, frames, strict=True))
    folder = tmp_path / "frames"
    folder.mkdir()
    for index, frame in enumerate(frames):
        save_rgb(folder / f"{index}.webp", frame)
    with open_media(folder) as source:
        assert source.info.kind == "folder" and [name for name, _ in source.frames()] == ["0", "1", "2", "3"]


def test_single_image_keeps_colour_order(tmp_path: Path) -> None:
    frame = np.zeros((10, 12, 3), np.uint8)
    frame[..., 0] = 255  # pure red in RGB
    save_rgb(tmp_path / "red.png", frame)
    with open_media(tmp_path / "red.png") as source:
        assert source.info.kind == "image" and source.info.frame_count == 1
        [(name, decoded)] = list(source.frames())
    assert name == "red"
    assert np.array_equal(decoded, frame)


@pytest.mark.parametrize(
    ("content", "name", "match"),
    [
        (None, "missing.mp4", "not found"),
        (b"this is text, not a video\n", "fake.mp4", "cannot open video"),
        (b"", "empty.avi", "cannot open video"),
        (b"hello", "notes.txt", "unsupported input"),
        (b"hello", "broken.png", "not a readable image"),
    ],
)
def test_bad_inputs(tmp_path: Path, content: bytes | None, name: str, match: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(VideoError, match=match) as info:
        open_media(path)
    assert "\n" not in str(info.value)


def test_image_bytes_round_trip() -> None:
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    assert np.array_equal(decode_image_bytes(encode_png(frame)), frame)
    mask = rng.integers(0, 256, (9, 7), dtype=np.uint8)
    png = encode_png(mask)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.array_equal(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED), mask)
    _ok, jpeg = cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))
    decoded = decode_image_bytes(jpeg.tobytes())
    assert decoded.shape == (16, 16, 3) and abs(int(decoded.mean()) - 128) <= 2


@pytest.mark.parametrize("data", [b"", b"GIF89a not much", b"\x89PNG\r\n\x1a\ntruncated", b"plain text"])
def test_decode_image_bytes_rejects_non_images(data: bytes) -> None:
    with pytest.raises(VideoError):
        decode_image_bytes(data)
    with pytest.raises(ValueError):  # the web layer can catch the broad type
        decode_image_bytes(data)


def test_encode_png_rejects_wrong_arrays() -> None:
    with pytest.raises(ValueError):
        encode_png(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError):
        encode_png(np.zeros((4, 4, 2), np.uint8))


def test_write_atomic_replaces_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "mask.png"
    write_atomic(target, b"first")
    write_atomic(target, b"second")
    assert target.read_bytes() == b"second"
    assert [p.name for p in tmp_path.iterdir()] == ["mask.png"]


def test_natural_key() -> None:
    assert sorted(["f10", "F2", "f1", "f1b"], key=natural_key) == ["f1", "f1b", "F2", "f10"]


@pytest.mark.skipif(not VTEST.is_file(), reason="Debian's opencv-doc sample vtest.avi is not installed")
def test_real_sample_metadata_and_first_frames() -> None:
    with open_media(VTEST) as source:
        assert source.info.size == (576, 768)
        assert source.info.fps == pytest.approx(10.0)
        assert source.info.frame_count == 795
        frames = source.frames()
        first = [next(frames) for _ in range(3)]
    assert [name for name, _ in first] == ["00000", "00001", "00002"]
    capture = cv2.VideoCapture(str(VTEST))  # the other decoder agrees on the pixels
    ok, bgr = capture.read()
    capture.release()
    assert ok and np.abs(bgr[..., ::-1].astype(int) - first[0][1]).mean() < 2


def exif_rotated(jpeg: bytes, orientation: int) -> bytes:
    """The JPEG with an EXIF APP1 segment that holds only an Orientation tag."""
    tiff = b"MM\x00\x2a\x00\x00\x00\x08" + b"\x00\x01" + b"\x01\x12\x00\x03\x00\x00\x00\x01"
    tiff += orientation.to_bytes(2, "big") + b"\x00\x00" + b"\x00\x00\x00\x00"
    body = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + (len(body) + 2).to_bytes(2, "big") + body + jpeg[2:]


def test_decode_for_model_equals_decode_then_resize() -> None:
    """Without `scaled` (the default), and for every image `scaled` does not apply to, the frame the
    model gets is exactly the full decode's resize, and the mask size is the image's own."""
    rng = np.random.default_rng(3)
    image = cv2.GaussianBlur(rng.integers(0, 256, (577, 767, 3), dtype=np.uint8), (0, 0), 2)
    big_jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    cases = [(big_jpeg, False), (cv2.imencode(".png", image)[1].tobytes(), True),
             (cv2.imencode(".jpg", image[:400, :500])[1].tobytes(), True),  # under twice 256 on one side
             (exif_rotated(big_jpeg, 6), True)]  # rotated: the scaled decode would not match the header
    for data, scaled in cases:
        full = decode_image_bytes(data)
        header = (577, 767) if data is not cases[2][0] else (400, 500)
        frame, size = decode_for_model(data, (256, 256), header, scaled=scaled)
        assert size == full.shape[:2]
        assert np.array_equal(frame, resize_image(full, (256, 256)))
    assert decode_image_bytes(cases[3][0]).shape[:2] == (767, 577)  # the EXIF tag was applied


def test_scaled_jpeg_decode_keeps_the_picture() -> None:
    """`scaled` decodes a big JPEG at 1/2 scale: the model input stays close to the full decode's."""
    rng = np.random.default_rng(4)
    image = cv2.GaussianBlur(rng.integers(0, 256, (576, 768, 3), dtype=np.uint8), (0, 0), 3)
    data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    frame, size = decode_for_model(data, (256, 256), (576, 768), scaled=True)
    reference = resize_image(decode_image_bytes(data), (256, 256))
    assert size == (576, 768) and frame.shape == (256, 256, 3)
    difference = np.abs(frame.astype(int) - reference.astype(int))
    assert 0 < difference.mean() < 2 and difference.max() < 40
