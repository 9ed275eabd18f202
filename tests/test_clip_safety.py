"""Clip uploads reach only allowed demuxers, probed from the content; job ids are matched whole and
never echoed when malformed; no error names a server path. On a real server, with real files."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import httpx
import numpy as np
import pytest

from service.video import UnsupportedVideo, VideoError, open_container, open_media
from tests.servers import REPO, Server, moving_square_frames, running_server, write_clip

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
SERVER_PATH_MARKS = ("vsod-spool", "upload-", tempfile.gettempdir())


@pytest.fixture(scope="module")
def server(model_store_env: dict[str, str]) -> Iterator[Server]:
    with running_server(model_store_env, job_workers=0) as server:  # no worker: nothing here needs one
        yield server


def jpeg_bytes() -> bytes:
    ok, data = cv2.imencode(".jpg", np.full((64, 64, 3), 128, np.uint8))
    assert ok
    return data.tobytes()


FFCONCAT = b"ffconcat version 1.0\nfile other.mp4\nfile /etc/hostname\n"
HLS = b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:10,\nother.ts\n#EXT-X-ENDLIST\n"


def assert_no_server_path(detail: str) -> None:
    assert not any(mark in detail for mark in SERVER_PATH_MARKS), detail


@pytest.mark.parametrize(
    ("name", "content_type", "body", "status", "says"),
    [
        ("list.mp4", "video/mp4", FFCONCAT, 415, "is not a video in a supported container"),
        ("list.m3u8", "video/mp4", HLS, 400, "cannot open video"),
        ("playlist.mp4", "application/octet-stream", HLS, 400, "cannot open video"),
        ("photo.mp4", "video/mp4", None, 415, "is not a video in a supported container"),
        ("notes.mp4", "video/mp4", b"just some text, not a video\n" * 40, 400, "cannot open video"),
        ("notes.txt", "text/plain", b"just some text\n", 415, "unsupported media type"),
    ],
    ids=["ffconcat", "hls-m3u8", "hls-renamed", "jpeg-renamed-mp4", "text-renamed-mp4", "text"],
)
def test_only_video_containers_are_opened(server: Server, name: str, content_type: str, body: bytes | None,
                                          status: int, says: str) -> None:
    data = jpeg_bytes() if body is None else body
    response = httpx.post(f"{server.url}/v1/clips", files={"file": (name, data, content_type)})
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert says in detail and name in detail, detail  # names the user's file...
    assert_no_server_path(detail)  # ...never the spool's


def test_a_real_video_under_any_name_is_accepted(server: Server, tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "walk.avi", moving_square_frames(4, seed=2))
    response = httpx.post(f"{server.url}/v1/clips", files={"file": ("walk.mp4", clip.read_bytes(), "video/mp4")})
    assert response.status_code == 202, response.text  # an AVI named .mp4: the content decides


def test_allow_list_refuses_playlists_and_images_by_their_own_names(tmp_path: Path) -> None:
    """What the server does to uploads holds for local files too (vsod predict opens videos the same way)."""
    (tmp_path / "list.ffconcat").write_bytes(FFCONCAT)
    (tmp_path / "list.m3u8").write_bytes(HLS)
    (tmp_path / "photo.jpg").write_bytes(jpeg_bytes())
    for name in ("list.ffconcat", "list.m3u8", "photo.jpg"):
        with pytest.raises(UnsupportedVideo, match="not a video in a supported container"):
            open_container(tmp_path / name, name).close()
    if VTEST.exists():
        with open_media(VTEST) as video:  # a real local video still opens
            assert video.info.kind == "video" and video.info.size == (576, 768)


def test_vsod_predict_refuses_a_playlist_on_one_line(tmp_path: Path, model_store_env: dict[str, str]) -> None:
    playlist = tmp_path / "list.mp4"
    playlist.write_bytes(FFCONCAT)
    env = {**os.environ, **model_store_env, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "service.cli", "predict", str(playlist), "--out", str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a video in a supported container" in lines[0], done.stderr


@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize(
    "job_id", ["0123456789abcdef0123456789abcdef%0A", "0123456789abcdef0123456789abcdef%0D%0A", "x" * 10_000],
    ids=["trailing-newline", "trailing-crlf", "10000-chars"],
)
def test_malformed_job_ids_are_refused_and_not_echoed(server: Server, method: str, job_id: str) -> None:
    for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/result"):
        if method == "DELETE" and path.endswith("/result"):
            continue
        response = httpx.request(method, f"{server.url}{path}")
        assert response.status_code == 404, (path, response.text)
        detail = response.json()["detail"]
        assert len(detail) < 200 and "0123456789abcdef" not in detail and "xxxx" not in detail, detail


def audio_only(path: Path) -> Path:
    """An mp4 holding one second of silence and no video stream."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 16000), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in (*stream.encode(frame), *stream.encode()):
            container.mux(packet)
    return path


def test_an_error_after_opening_names_the_upload_not_the_spool(server: Server, tmp_path: Path) -> None:
    data = audio_only(tmp_path / "song.mp4").read_bytes()
    response = httpx.post(f"{server.url}/v1/clips", files={"file": ("song.mp4", data, "video/mp4")})
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert "'song.mp4' has no video stream" in detail, detail
    assert_no_server_path(detail)


def test_video_error_messages_use_the_given_name(tmp_path: Path) -> None:
    path = tmp_path / "upload-abc123"
    path.write_bytes(b"not a video at all" * 20)
    with pytest.raises(VideoError) as caught:
        open_container(path, "holiday.mp4")
    assert "holiday.mp4" in str(caught.value) and str(tmp_path) not in str(caught.value)
