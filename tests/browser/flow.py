"""The page walk-through shared by tests/test_browser.py and the screenshot script: start the camera,
wait for masks drawn over it, read back counters and canvas pixels, upload a clip, wait for its
mask video, take a screenshot."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .cdp import Page

# Read in one synchronous script, so the counters and the pixels belong to the same drawn mask.
READ_LIVE = """(() => {
  const canvas = document.getElementById('overlay');
  const px = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let sum = 0, max = 0, min = 255;
  for (let i = 3; i < px.length; i += 4) { sum += px[i]; if (px[i] > max) max = px[i]; if (px[i] < min) min = px[i]; }
  const text = (id) => document.getElementById(id).textContent;
  return {
    stats: {...window.vsod.stats},
    canvas: {width: canvas.width, height: canvas.height, alphaMean: sum / (px.length / 4), alphaMax: max, alphaMin: min},
    opacity: Number(document.getElementById('opacity').value),
    shown: {masks: text('stat-masks'), fps: text('stat-fps'), latency: text('stat-latency'), session: text('stat-session')},
    video: {width: document.getElementById('camera').videoWidth, height: document.getElementById('camera').videoHeight},
  };
})()"""

READ_CLIP = """(() => ({
  ...window.vsod.clip,
  jobText: document.getElementById('job-text').textContent,
  uploadText: document.getElementById('upload-text').textContent,
  resultWidth: document.getElementById('clip-result').videoWidth,
  downloadsShown: !document.getElementById('downloads').hidden,
}))()"""

BANNER = "(document.getElementById('banner').hidden ? null : document.getElementById('banner-text').textContent)"


@dataclass
class Walk:
    status_text: str
    refused: str | None  # the page's message when streaming without the API key (keys on only)
    resumed: dict[str, Any] | None  # stats before the connection was cut and after the page resumed
    live: dict[str, Any]
    clip: dict[str, Any]
    banner: str | None
    screenshot: bytes


async def walk_page(page: Page, base_url: str, clip: Path, masks_wanted: int = 8, timeout_s: float = 180,
                    api_key: str | None = None, cut: Callable[[], None] | None = None) -> Walk:
    await page.goto(base_url + "/")
    status = await page.wait_for(
        "(t => t.startsWith('ready') || t.startsWith('not ready') ? t : '')"
        "(document.getElementById('server-status').textContent)", 60)
    refused = None
    if api_key is not None:  # first without it: the page must say why the stream was refused
        await page.evaluate("document.getElementById('start').click()")
        refused = await page.wait_for(f"!document.getElementById('start').disabled && {BANNER}", 60)
        await page.evaluate(f"(k => {{ k.value = {json.dumps(api_key)}; k.dispatchEvent(new Event('change')); }})"
                            "(document.getElementById('api-key'))")
        await page.evaluate("window.vsod.stats.errors = 0; document.getElementById('banner').hidden = true")
    await page.evaluate("document.getElementById('start').click()")
    await page.wait_for(f"window.vsod.stats.drawn >= {masks_wanted} || window.vsod.stats.errors > 0", timeout_s)
    live = await page.evaluate(READ_LIVE)
    resumed = None
    if cut is not None:  # drop every connection: the page must come back to the same session
        before = await page.evaluate("({...window.vsod.stats})")
        cut()
        after = await page.wait_for(f"window.vsod.stats.reconnects > {before['reconnects']} && "
                                    f"window.vsod.stats.masks >= {before['masks'] + 3} && {{...window.vsod.stats}}", timeout_s)
        resumed = {"before": before, "after": after}

    await page.set_files("#clip-file", [clip])
    await page.evaluate("document.getElementById('clip-form').requestSubmit()")
    await page.wait_for("['done', 'failed', 'refused'].includes(window.vsod.clip.status) && "
                        "(window.vsod.clip.status !== 'done' || window.vsod.clip.resultBytes > 0)", timeout_s)
    # The mask video loads (or the page says why it cannot): either ends the wait.
    await page.wait_for(f"window.vsod.clip.resultPlayable || window.vsod.clip.status !== 'done' || {BANNER} !== null", 60)
    clip_state = await page.evaluate(READ_CLIP)
    banner = await page.evaluate(BANNER)
    await page.wait_for(f"window.vsod.stats.drawn >= {live['stats']['drawn'] + 2}", timeout_s)  # still streaming
    shot = await page.screenshot()
    return Walk(status, refused, resumed, live, clip_state, banner, shot)


def small_png(png: bytes, width: int = 960) -> bytes:
    """A screenshot for the docs: scaled to `width` and palette-quantised, so the repo stays small."""
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    if image.shape[1] > width:
        image = cv2.resize(image, (width, round(image.shape[0] * width / image.shape[1])), interpolation=cv2.INTER_AREA)
    try:
        from PIL import Image
    except ImportError:  # pillow comes with the [test] extra; without it, a plain compressed PNG
        _, data = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        return data.tobytes()
    import io

    rgb = Image.fromarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB)).quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    out = io.BytesIO()
    rgb.save(out, format="PNG", optimize=True)
    return out.getvalue()
