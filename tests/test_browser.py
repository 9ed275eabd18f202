"""The page at `/` end to end in Debian's headless Chromium: a fake camera plays a synthetic clip
(.y4m), the page streams it over /v1/stream and draws the masks over the video; a clip upload comes
back as a playable mask video. Counters and canvas pixels are read back from the page itself.

Needs /usr/bin/chromium (`apt-get install -y chromium chromium-driver`); without it the test skips,
unless VSOD_REQUIRE_BROWSER=1 (as in CI), where a missing browser is a failure.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.browser.cdp import find_chromium, launch_chromium
from tests.browser.flow import Walk, small_png, walk_page
from tests.browser.media import synthetic_frames, write_h264, write_y4m
from tests.cut_proxy import CuttableProxy
from tests.servers import Server, running_server

CHROMIUM = find_chromium()
if CHROMIUM is None and os.environ.get("VSOD_REQUIRE_BROWSER") != "1":
    pytest.skip("Chromium is not installed (Debian: apt-get install -y chromium chromium-driver)", allow_module_level=True)

CLIP_FRAMES = 12
KEY = "page-key-0123456789"
AUTH = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def server(model_store_env: dict[str, str]) -> Iterator[Server]:
    """API keys on: the page is public, the API is not, and the page has to send the key it is given."""
    with running_server(model_store_env, api_keys=KEY) as server:
        yield server


@pytest.fixture(scope="module")
def walk(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Walk:
    assert CHROMIUM is not None, "VSOD_REQUIRE_BROWSER=1 but no chromium on PATH (apt-get install -y chromium)"
    work = tmp_path_factory.mktemp("browser")
    camera = write_y4m(work / "camera.y4m", synthetic_frames(24, (240, 320), seed=7), fps=10)
    clip = write_h264(work / "upload.mp4", synthetic_frames(CLIP_FRAMES, (240, 320), seed=3), fps=10)

    proxy = CuttableProxy(int(server.url.rsplit(":", 1)[1]))  # the page loads through it, so it can be cut

    async def main() -> Walk:
        async with launch_chromium(work, camera, CHROMIUM) as page:
            return await walk_page(page, proxy.url, clip, api_key=KEY, cut=proxy.cut)

    try:
        return asyncio.run(main())
    finally:
        proxy.close()


def test_the_page_asks_for_the_api_key(walk: Walk) -> None:
    # Streaming without the key: the server's own message is shown and the camera stops.
    assert walk.refused is not None and "unauthorized" in walk.refused and "API key" in walk.refused, walk.refused


def test_live_masks_arrive_and_are_drawn(walk: Walk, server: Server) -> None:
    assert walk.status_text.startswith("ready: test-student@"), walk.status_text
    live, stats = walk.live, walk.live["stats"]
    assert stats["errors"] == 0 and walk.banner is None, walk.banner
    assert stats["drawn"] >= 8 and stats["masks"] >= stats["drawn"] and stats["framesSent"] >= stats["masks"]
    # Lockstep: every frame was answered in order from frame 0, none dropped, no reconnection.
    assert stats["lastFrame"] == stats["masks"] - 1 and stats["dropped"] == 0 and stats["reconnects"] == 0
    assert stats["latencyMs"] >= 0 and stats["rttMs"] >= 0 and stats["fps"] > 0 and stats["unanswered"] == 0
    assert live["shown"]["masks"] == str(stats["masks"]) and live["shown"]["session"] == stats["sessionId"]
    assert re.fullmatch(r"[0-9a-f-]{36}", stats["sessionId"])
    # The overlay holds the last mask at the sent frame's size: alpha = saliency x opacity.
    canvas = live["canvas"]
    assert (canvas["width"], canvas["height"]) == (live["video"]["width"], live["video"]["height"]) == (320, 240)
    assert canvas["alphaMax"] > canvas["alphaMin"]  # a mask with structure, not a blank or flat fill
    assert abs(canvas["alphaMean"] - stats["lastMaskMean"] * live["opacity"]) <= 1.0
    # The server saw the same session (and the stream was still running).
    session = httpx.get(f"{server.url}/v1/sessions/{stats['sessionId']}", headers=AUTH).json()
    assert session["frame"] >= stats["masks"] and session["dropped"] == 0


def test_the_page_resumes_its_session_after_a_drop(walk: Walk) -> None:
    assert walk.resumed is not None
    before, after = walk.resumed["before"], walk.resumed["after"]
    assert after["sessionId"] == before["sessionId"] and after["reconnects"] == before["reconnects"] + 1
    # The session's frame index went on (the server kept its state): no restart at frame 0. The
    # frame in flight at the cut may have been processed with its mask lost, hence the "+ 1".
    assert before["lastFrame"] < after["lastFrame"] <= after["masks"] and after["masks"] > before["masks"]
    assert after["errors"] == before["errors"]


def test_clip_upload_shows_the_mask_video(walk: Walk, server: Server) -> None:
    clip = walk.clip
    assert clip["status"] == "done" and clip["frames"] == CLIP_FRAMES, clip
    assert clip["uploadText"] == "uploaded" and clip["jobText"] == f"done {CLIP_FRAMES}/{CLIP_FRAMES}"
    assert clip["resultPlayable"] and clip["resultWidth"] == 320 and clip["downloadsShown"]
    served = httpx.get(f"{server.url}/v1/jobs/{clip['jobId']}/result", params={"format": "mp4"}, headers=AUTH)
    assert served.status_code == 200 and clip["resultBytes"] == len(served.content)


def test_screenshot(walk: Walk, tmp_path: Path) -> None:
    png = small_png(walk.screenshot)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) < 400_000
    (tmp_path / "screenshot.png").write_bytes(png)
    if target := os.environ.get("VSOD_SCREENSHOT"):  # e.g. docs/screenshot.png; see tests/browser/screenshot.py
        Path(target).write_bytes(png)
