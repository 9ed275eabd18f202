"""Job results streamed from disk: npz and mp4 of a 2,000-frame clip built once, a mask at a time,
on a real server with Redis; the server's peak memory while serving them is measured."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import httpx
import numpy as np
import pytest

from service.job_results import write_npz
from tests.servers import REDIS_URL, Server, decode_png_mask, delete_prefix, encode_clip, redis_prefix, running_server
from tests.test_clip_jobs import wait_for

FRAMES = 2000
HEIGHT, WIDTH = 240, 320  # 2,000 masks of this size are 154 MB raw: holding them whole fails the bound below
RSS_BOUND_MB = 150  # the acceptance figure


def long_clip(path: Path, count: int = FRAMES) -> Path:
    """A small-pixel but long H.264 clip (a square moving over a gradient), written with PyAV."""
    ramp = np.linspace(30, 120, WIDTH, dtype=np.uint8)[None, :, None]
    background = np.broadcast_to(ramp, (HEIGHT, WIDTH, 3)).copy()

    def frames() -> Iterator[np.ndarray]:
        for index in range(count):
            frame = background.copy()
            x = (index * 2) % (WIDTH - 60)
            frame[80:140, x : x + 60] = (240, 200, 40)
            yield frame

    return encode_clip(path, frames(), "libx264", rate=25, options={"crf": "30", "preset": "ultrafast"})


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in kB, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def reset_peak(pid: int) -> None:
    """Set the process's VmHWM back to its current RSS (Linux: clear_refs 5), so a peak measures one phase."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


@pytest.fixture(scope="module")
def server(model_store_env: dict[str, str]) -> Iterator[Server]:
    prefix = redis_prefix()
    with running_server(model_store_env, redis_url=REDIS_URL, redis_prefix=prefix, log_level="info") as server:
        yield server
    delete_prefix(prefix)


def fetch(server: Server, job_id: str, fmt: str, out: Path) -> tuple[int, dict[str, str]]:
    """Stream a result into a file (the test process holds no more of it than the server should)."""
    with httpx.stream("GET", f"{server.url}/v1/jobs/{job_id}/result", params={"format": fmt}, timeout=600) as response:
        with out.open("wb") as handle:
            for chunk in response.iter_bytes(1 << 20):
                handle.write(chunk)
        return response.status_code, dict(response.headers)


def test_results_of_a_long_clip_are_streamed_with_bounded_memory(server: Server, tmp_path: Path) -> None:
    clip = long_clip(tmp_path / "long.mp4")
    with clip.open("rb") as handle:
        created = httpx.post(f"{server.url}/v1/clips", files={"file": ("long.mp4", handle, "video/mp4")}, timeout=60)
    assert created.status_code == 202, created.text
    job_id = created.json()["job_id"]
    status = wait_for(server, job_id)
    assert status["status"] == "done" and status["frames_done"] == FRAMES, status

    pid = server.process.pid
    reset_peak(pid)
    before = memory_kb(pid)
    # Two first requests for npz at once (built once, both wait for it) and one for mp4, concurrently.
    requests = [("npz", tmp_path / "a.npz"), ("npz", tmp_path / "b.npz"), ("mp4", tmp_path / "masks.mp4")]
    with ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(lambda item: fetch(server, job_id, *item), requests))
    after = memory_kb(pid)
    growth_mb = (after["VmHWM"] - before["VmRSS"]) / 1024
    print(f"server RSS {before['VmRSS'] / 1024:.0f} MB before; peak while building and serving npz x2 and mp4 "
          f"of {FRAMES} {WIDTH}x{HEIGHT} masks: +{growth_mb:.0f} MB")
    assert growth_mb < RSS_BOUND_MB, growth_mb

    for (fmt, path), (code, headers) in zip(requests, answers, strict=True):
        assert code == 200 and int(headers["content-length"]) == path.stat().st_size > 0, (fmt, headers)
    assert server.output().count("built its npz result") == 1  # the two concurrent requests shared one build
    assert server.output().count("built its mp4 result") == 1
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()

    with np.load(tmp_path / "a.npz") as archive:
        masks = archive["masks"]
    assert masks.dtype == np.uint8 and masks.shape == (FRAMES, HEIGHT, WIDTH)
    zipped = httpx.get(f"{server.url}/v1/jobs/{job_id}/result", params={"format": "zip"}, timeout=120).content
    with zipfile.ZipFile(io.BytesIO(zipped)) as archive:
        for index in (0, 1234, FRAMES - 1):  # the npz holds the zip's masks, in order
            assert np.array_equal(masks[index], decode_png_mask(archive.read(f"{index:05d}.png")))
    with av.open(str(tmp_path / "masks.mp4")) as video:
        stream = video.streams.video[0]
        assert (stream.width, stream.height) == (WIDTH, HEIGHT)
        assert sum(1 for packet in video.demux(stream) if packet.size) == FRAMES

    again = httpx.get(f"{server.url}/v1/jobs/{job_id}/result", params={"format": "npz"}, timeout=120)
    assert again.content == (tmp_path / "a.npz").read_bytes()
    assert server.output().count("built its npz result") == 1  # stored: not built again


def test_streamed_npz_equals_numpy_savez(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    masks = [rng.integers(0, 256, (7, 9), dtype=np.uint8) for _ in range(5)]
    write_npz(iter(masks), len(masks), tmp_path / "streamed.npz")
    with np.load(tmp_path / "streamed.npz") as archive:
        assert np.array_equal(archive["masks"], np.stack(masks))
    write_npz(iter([]), 0, tmp_path / "empty.npz")
    with np.load(tmp_path / "empty.npz") as archive:
        assert archive["masks"].shape == (0, 0, 0)
    with pytest.raises(ValueError, match="held 5 masks, not 6"):
        write_npz(iter(masks), 6, tmp_path / "short.npz")
