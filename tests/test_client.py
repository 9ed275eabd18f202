"""service.client against a real server: stream and clip masks equal the offline path, the stream
reconnects and resumes after a real connection drop (a TCP proxy the test cuts), and server errors
come back as exceptions carrying the server's message."""

from __future__ import annotations

import asyncio
import io
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from service.client import (
    AsyncVsodClient,
    JobFailed,
    StreamError,
    VsodClient,
    VsodConnectionError,
    VsodHTTPError,
)
from service.client_common import decode_result
from service.client_stream import stream_url
from service.model import Predictor
from service.video import open_media
from tests.cut_proxy import CuttableProxy
from tests.servers import (
    REPO,
    Server,
    free_port,
    max_diff,
    moving_square_frames,
    running_server,
    write_clip,
)

LIMITS = {"max_frame_side": 512, "max_upload_bytes": 2_000_000}
KEY, OTHER_KEY = "key-alpha-0123456789", "key-beta-9876543210"


@pytest.fixture(scope="module")
def server(model_store_env: dict[str, str]) -> Iterator[Server]:
    """One server for the module, with API keys on: every client below has to send its key."""
    with running_server(model_store_env, api_keys=f"{KEY},{OTHER_KEY}", **LIMITS) as server:
        yield server


@pytest.fixture(scope="module")
def predictor(model_store) -> Predictor:  # type: ignore[no-untyped-def]
    return Predictor(*model_store.load("test-student"), device="cpu")


@pytest.fixture
def proxy(server: Server) -> Iterator[CuttableProxy]:
    proxy = CuttableProxy(int(server.url.rsplit(":", 1)[1]))
    yield proxy
    proxy.close()


def calling_before(frames: list[np.ndarray], index: int, action: Callable[[], None]) -> Iterable[np.ndarray]:
    """The frames, running `action` just before frame `index` is handed over (i.e. sent)."""
    for i, frame in enumerate(frames):
        if i == index:
            action()
        yield frame


def assert_close(masks: list[np.ndarray], expected: list[np.ndarray]) -> None:
    # Streaming runs one frame per pass and the clip path eight: a few pixels may round apart (±1).
    assert len(masks) == len(expected)
    assert all(max_diff(got, want) <= 1 for got, want in zip(masks, expected, strict=True))


def test_stream_equals_offline(server: Server, predictor: Predictor) -> None:
    frames = moving_square_frames(12, seed=21)
    with VsodClient(server.url, api_key=KEY) as client:
        masks = list(client.stream(frames))
    assert all(m is not None and m.dtype == np.uint8 and m.shape == (72, 96) for m in masks)
    assert_close(masks, list(predictor.predict_clip(frames)))  # type: ignore[arg-type]


def test_jpeg_stream_continues_a_named_session(server: Server, predictor: Predictor) -> None:
    frames = moving_square_frames(8, seed=22)
    with VsodClient(server.url, api_key=KEY) as client:
        first = list(client.stream(frames[:4], session_id="client-jpeg", encoding="jpeg", quality=95))
        second = list(client.stream(frames[4:], session_id="client-jpeg", encoding="jpeg", quality=95))
        assert client.session("client-jpeg")["frame"] == 8
        client.delete_session("client-jpeg")
        with pytest.raises(VsodHTTPError) as error:
            client.session("client-jpeg")
    assert error.value.status == 404 and "client-jpeg" in error.value.detail
    # The offline path on what the server decoded: JPEG is lossy, the decoder deterministic.
    from service.client import encode_frame
    from service.video import decode_image_bytes

    decoded = [decode_image_bytes(encode_frame(f, "jpeg", 95)) for f in frames]
    assert_close(first + second, list(predictor.predict_clip(decoded)))  # type: ignore[arg-type]


def test_stream_resumes_after_the_connection_is_cut(server: Server, proxy: CuttableProxy, predictor: Predictor) -> None:
    frames = moving_square_frames(12, seed=23)
    with VsodClient(proxy.url, api_key=KEY) as client:
        # Frame 6 is swallowed on its way and the connection dies: the client reconnects with its
        # session id, the server says "next is frame 6", and the client sends it again.
        masks = list(client.stream(calling_before(frames, 6, lambda: proxy.drop_next("request")), session_id="cut-1"))
        assert proxy.connections == 2  # the first stream connection and the one that resumed
        assert client.session("cut-1")["frame"] == 12
    assert_close(masks, list(predictor.predict_clip(frames)))  # type: ignore[arg-type]


def test_a_mask_lost_in_the_drop_is_reported_and_the_session_goes_on(
    server: Server, proxy: CuttableProxy, predictor: Predictor
) -> None:
    frames = moving_square_frames(10, seed=24)
    client = VsodClient(proxy.url, api_key=KEY)
    with client, client.open_stream("cut-2") as live:
        results = []
        for i, frame in enumerate(frames):
            if i == 4:  # the server processes frame 4, but its mask never reaches the client
                proxy.drop_next("response")
            results.append(live.send(frame))
        assert live.reconnects == 1 and live.next_frame == 10 and live.session_id == "cut-2"
    assert [r.frame for r in results] == list(range(10))
    assert [r.lost for r in results] == [i == 4 for i in range(10)] and results[4].mask is None
    assert all(r.restarted is None and r.dropped == 0 for r in results)
    offline = list(predictor.predict_clip(frames))
    kept = [i for i in range(10) if i != 4]
    # Frame 5 onwards still equal the offline path: the state carried frame 4's context.
    assert_close([results[i].mask for i in kept], [offline[i] for i in kept])  # type: ignore[misc]


def test_async_client(server: Server, proxy: CuttableProxy, predictor: Predictor, tmp_path: Path) -> None:
    first, second = moving_square_frames(8, seed=28), moving_square_frames(8, seed=29)
    clip = write_clip(tmp_path / "async.avi", first[:6])
    with open_media(clip) as video:
        clip_offline = np.stack(list(predictor.predict_clip([frame for _, frame in video.frames()])))

    async def collect(client: AsyncVsodClient, frames: Iterable[np.ndarray], session_id: str) -> list:
        return [mask async for mask in client.stream(frames, session_id=session_id)]

    async def main() -> tuple[list, list, np.ndarray, np.ndarray, StreamError]:
        async with AsyncVsodClient(proxy.url, api_key=KEY) as cut, AsyncVsodClient(server.url, api_key=KEY) as direct:
            # Two sessions in one event loop; one loses its connection at frame 3 and resumes.
            masks_a, masks_b = await asyncio.gather(
                collect(cut, calling_before(first, 3, lambda: proxy.drop_next("request")), "async-a"),
                collect(direct, second, "async-b"))
            image_mask = await direct.segment_image(first[0])
            clip_masks = await direct.process_clip(clip)
        async with AsyncVsodClient(server.url, api_key="not-a-key") as refused:
            with pytest.raises(StreamError) as error:
                await collect(refused, first[:1], "async-c")
        return masks_a, masks_b, image_mask, clip_masks, error.value

    masks_a, masks_b, image_mask, clip_masks, refusal = asyncio.run(main())
    assert proxy.connections == 2
    assert_close(masks_a, list(predictor.predict_clip(first)))
    assert_close(masks_b, list(predictor.predict_clip(second)))
    assert max_diff(image_mask, predictor.predict_image(first[0])) <= 1
    assert clip_masks.shape == (6, 72, 96) and max_diff(clip_masks, clip_offline) <= 1
    assert refusal.code == "forbidden"


def test_process_clip_equals_offline(server: Server, predictor: Predictor, tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "square.avi", moving_square_frames(10, seed=25))
    with open_media(clip) as video:
        decoded = [frame for _, frame in video.frames()]
    expected = np.stack(list(predictor.predict_clip(decoded)))
    seen: list[str] = []
    with VsodClient(server.url, api_key=KEY) as client:
        masks = client.process_clip(clip, progress=lambda job: seen.append(job["status"]))
        assert masks.dtype == np.uint8 and masks.shape == (10, 72, 96)
        # The same chunked clip path; the server runs one thread and this process several, so
        # float sums may differ in the last bits and a pixel round the other way.
        assert max_diff(masks, expected) <= 1 and np.mean(masks == expected) > 0.99
        assert seen[-1] == "done"
        job_id = client.submit_clip(clip)["job_id"]
        assert np.array_equal(client.process_clip(clip, format="zip"), masks)
        client.wait_job(job_id)
        assert client.job_result(job_id, "mp4")[4:8] == b"ftyp"  # an MP4 container


def test_segment_image(server: Server, predictor: Predictor, tmp_path: Path) -> None:
    frame = moving_square_frames(1, seed=26)[0]
    with VsodClient(server.url, api_key=KEY) as client:
        mask = client.segment_image(frame)
        assert mask.shape == (72, 96) and max_diff(mask, predictor.predict_image(frame)) <= 1
        binary = client.segment_image(frame, threshold=0.5)
        assert set(np.unique(binary)) <= {0, 255}
        path = tmp_path / "still.png"
        from service.video import encode_png

        path.write_bytes(encode_png(frame))
        assert np.array_equal(client.segment_image(path), mask)


def test_server_errors_carry_the_servers_message(server: Server, tmp_path: Path) -> None:
    not_a_video = tmp_path / "notes.mp4"
    not_a_video.write_bytes(b"hello, this is no video")
    with VsodClient(server.url, api_key=KEY) as client:
        with pytest.raises(VsodHTTPError) as error:
            client.segment_image(b"not an image")
        assert error.value.status == 400 and "not a decodable image" in str(error.value)
        with pytest.raises(VsodHTTPError) as error:
            client.process_clip(not_a_video)
        assert error.value.status == 400 and error.value.detail
        with pytest.raises(VsodHTTPError) as error:
            client.wait_job("0" * 32)
        assert error.value.status == 404
        with pytest.raises(StreamError) as stream_error:
            list(client.stream([np.zeros((600, 8, 3), np.uint8)]))
        assert stream_error.value.code == "frame_too_large" and "512" in stream_error.value.message
        with pytest.raises(StreamError) as stream_error:
            list(client.stream(moving_square_frames(1), session_id="has space"))
        assert stream_error.value.code == "bad_session_id"
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        VsodClient(server.url, api_key=KEY).segment_image(np.zeros((4, 4), np.float32))
    assert JobFailed({"job_id": "j", "error": "boom"}).args[0] == "job j failed: boom"


def test_unreachable_server() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with VsodClient(url, timeout=5) as client:
        with pytest.raises(VsodConnectionError, match="cannot stream"):
            list(client.stream(moving_square_frames(1), retries=1))
        with pytest.raises(VsodConnectionError):
            client.ready()


def test_api_keys_are_sent_and_refusals_explained(server: Server) -> None:
    frames = moving_square_frames(2, seed=27)
    with VsodClient(server.url, api_key=KEY) as client:
        assert len(list(client.stream(frames, session_id="keyed"))) == 2
        assert client.session("keyed")["frame"] == 2
    with VsodClient(server.url, api_key=OTHER_KEY) as other:
        with pytest.raises(VsodHTTPError) as error:  # sessions belong to the key that made them
            other.session("keyed")
        assert error.value.status == 404
    for key, status, code in ((None, 401, "unauthorized"), ("not-a-key", 403, "forbidden")):
        with VsodClient(server.url, api_key=key) as client:
            with pytest.raises(VsodHTTPError) as error:
                client.segment_image(frames[0])
            assert error.value.status == status and "key" in error.value.detail
            with pytest.raises(StreamError) as stream_error:
                list(client.stream(frames))
            assert stream_error.value.code == code and "key" in stream_error.value.message


def test_urls() -> None:
    assert stream_url("https://vsod.example:8443/", "cam 1") == "wss://vsod.example:8443/v1/stream?session_id=cam%201"
    assert stream_url("http://h:1", None) == "ws://h:1/v1/stream"
    with pytest.raises(ValueError, match="http"):
        VsodClient("ftp://h")


def test_a_result_zip_with_an_unreadable_mask_is_refused_by_name() -> None:
    masks = io.BytesIO()
    with zipfile.ZipFile(masks, "w") as archive:
        archive.writestr("000000.png", cv2.imencode(".png", np.zeros((4, 4), np.uint8))[1].tobytes())
        archive.writestr("000001.png", b"not a png")
    with pytest.raises(ValueError, match=r"000001\.png in the masks zip is not a readable image"):
        decode_result(masks.getvalue(), "zip")


def test_the_docs_snippet_runs_as_written(server: Server, tmp_path: Path) -> None:
    """docs/client.md's client block, verbatim, against this server (its URL and key from the
    environment, as the snippet reads them) with a small clip named vtest.avi in the working folder."""
    text = (REPO / "docs" / "client.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", text, re.S)
    assert snippet is not None, "docs/client.md has no python block"
    write_clip(tmp_path / "vtest.avi", moving_square_frames(12, seed=30))
    env = {**os.environ, "VSOD_URL": server.url, "VSOD_API_KEY": KEY, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", snippet.group(1)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "12 live masks (72, 96), clip masks (12, 72, 96), still mask (72, 96)"
