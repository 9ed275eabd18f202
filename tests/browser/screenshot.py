"""Make docs/screenshot.png: the page at `/` in headless Chromium, fake camera and a clip upload,
against a real server (the same walk-through as tests/test_browser.py).

    python -m tests.browser.screenshot                          # the store's vsod-student if present
    python -m tests.browser.screenshot --store model_store --model vsod-student --out docs/screenshot.png

Without a trained model it serves the tests' seeded random model, whose masks mean nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from service.model.store import ModelStore
from service.paths import default_store_root
from tests.browser.cdp import launch_chromium
from tests.browser.flow import small_png, walk_page
from tests.browser.media import synthetic_frames, write_h264, write_y4m
from tests.servers import REPO, running_server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, default=None, help="model store (default: VSOD_MODEL_STORE or ./model_store)")
    parser.add_argument("--model", default="vsod-student")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshot.png")
    parser.add_argument("--seed", type=int, default=7, help="synthetic scene the fake camera plays")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="vsod-shot-") as tmp:
        work = Path(tmp)
        store, model = args.store or default_store_root(), args.model
        if model not in ModelStore(store).names():
            from tests.conftest import TEST_MODEL, make_test_store

            print(f"no model {model!r} in {store}: using the tests' random model", file=sys.stderr)
            store, model = make_test_store(work / "store").root, TEST_MODEL
        camera = write_y4m(work / "camera.y4m", synthetic_frames(40, (240, 320), seed=args.seed), fps=10)
        clip = write_h264(work / "upload.mp4", synthetic_frames(20, (240, 320), seed=args.seed + 1), fps=10)
        env = {"VSOD_MODEL_STORE": str(store), "VSOD_MODEL": model}
        with running_server(env) as server:

            async def walk() -> bytes:
                async with launch_chromium(work, camera) as page:
                    return (await walk_page(page, server.url, clip, masks_wanted=20)).screenshot

            png = small_png(asyncio.run(walk()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(png)
    print(f"wrote {args.out} ({len(png) // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
