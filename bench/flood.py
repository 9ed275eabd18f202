"""A flooding session against a quiet one: does the flood raise the quiet session's latency?

    python bench/flood.py --model vsod-student                  # 3 rounds of 6 s, quiet alone vs flooded

One real server (the server's defaults for every limit: VSOD_MAX_STREAM_FPS, the decode budget
VSOD_MAX_STREAM_PIXELS_PER_S, VSOD_MAX_FRAME_SIDE). The quiet session is a camera: vtest.avi's
768x576 JPEGs at `--pace` frames/s, each sent when due and its mask awaited. The flood is the attack
of issue "Hardening" (item 3): 4096x4096 PNGs of ~20 KB each (cheap to send, dear to decode), sent at
`--flood-fps` (within the frame-rate limit) without waiting for masks. Rounds alternate quiet alone
and quiet + flood, so the VM's drift hits both alike; the figure is the median over rounds of
p95(flooded) / p95(quiet), target <= 1.5. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import jpeg, median, percentile, run, server_env, start_server, stop_server, summary, video_frames


def flood_frame(side: int, seed: int) -> bytes:
    """A large PNG that compresses to little: a few flat rectangles."""
    rng = np.random.default_rng(seed)
    image = np.zeros((side, side, 3), np.uint8)
    for _ in range(6):
        x, y = rng.integers(0, side - 64, 2)
        cv2.rectangle(image, (int(x), int(y)), (int(x) + side // 4, int(y) + side // 4), rng.integers(0, 255, 3).tolist(), -1)
    ok, data = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok
    return data.tobytes()


async def quiet(url: str, payloads: list[bytes], pace: float, seconds: float) -> list[float]:
    from websockets.asyncio.client import connect

    latencies: list[float] = []
    async with connect(f"{url}/v1/stream", max_size=None, open_timeout=60) as ws:
        json.loads(await ws.recv())
        stop_at = next_send = time.perf_counter()
        stop_at += seconds
        index = 0
        while time.perf_counter() < stop_at:
            await asyncio.sleep(max(0.0, next_send - time.perf_counter()))
            next_send += 1 / pace
            sent = time.perf_counter()
            await ws.send(payloads[index % len(payloads)])
            while json.loads(await ws.recv()).get("type") != "mask":
                pass
            await ws.recv()
            latencies.append((time.perf_counter() - sent) * 1000)
            index += 1
    return latencies


async def flood(url: str, payloads: list[bytes], fps: float, stop: asyncio.Event) -> int:
    from websockets.asyncio.client import connect

    sent = 0
    async with connect(f"{url}/v1/stream", max_size=None, open_timeout=60) as ws:
        json.loads(await ws.recv())

        async def drain() -> None:
            async for _ in ws:  # masks and errors: read, so the server's sends never stall
                pass

        reader = asyncio.create_task(drain())
        while not stop.is_set():
            await ws.send(payloads[sent % len(payloads)])
            sent += 1
            await asyncio.sleep(1 / fps)
        reader.cancel()
    return sent


async def one_round(url: str, payloads: list[bytes], big: list[bytes], args: argparse.Namespace,
                    flooded: bool) -> list[float]:
    if not flooded:
        return await quiet(url, payloads, args.pace, args.seconds)
    stop = asyncio.Event()
    attacker = asyncio.create_task(flood(url, big, args.flood_fps, stop))
    await asyncio.sleep(1.0)  # the flood is in full swing before the measurement
    try:
        return await quiet(url, payloads, args.pace, args.seconds)
    finally:
        stop.set()
        await attacker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vsod-student")
    parser.add_argument("--store", help="model store folder (default: $VSOD_MODEL_STORE or ./model_store)")
    parser.add_argument("--rounds", type=int, default=3, help="pairs of rounds (quiet alone, flooded)")
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per round")
    parser.add_argument("--pace", type=float, default=10.0, help="the quiet camera's frames/s")
    parser.add_argument("--flood-fps", type=float, default=50.0, help="the flood's frames/s")
    parser.add_argument("--flood-side", type=int, default=4096, help="the flood's frame side, pixels")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    payloads = [jpeg(frame) for frame in video_frames(30)]
    big = [flood_frame(args.flood_side, seed) for seed in range(4)]
    server = start_server(server_env(args, args.threads), VSOD_MODEL=args.model, VSOD_THREADS=args.threads)
    rows: list[dict[str, float]] = []
    try:
        asyncio.run(quiet(server.ws_url, payloads, args.pace, 2.0))  # warm-up
        for _ in range(args.rounds):
            row = {}
            for flooded in (False, True):
                latencies = asyncio.run(one_round(server.ws_url, payloads, big, args, flooded))
                row["flooded" if flooded else "quiet"] = percentile(latencies, 95)
            row["ratio"] = row["flooded"] / row["quiet"]
            rows.append(row)
    finally:
        stop_server(server)

    print(f"quiet camera: 768x576 JPEG at {args.pace:g} frames/s; flood: {args.flood_side}x{args.flood_side} PNG "
          f"({len(big[0]) // 1024} KB) at {args.flood_fps:g} frames/s; {args.threads} thread(s), model {args.model}")
    print(f"{'round':>5} {'quiet p95 ms':>13} {'flooded p95 ms':>15} {'ratio':>6}")
    for index, row in enumerate(rows, 1):
        print(f"{index:>5} {row['quiet']:>13.1f} {row['flooded']:>15.1f} {row['ratio']:>6.2f}")
    ratio = median([row["ratio"] for row in rows])
    print(f"median p95 flooded / quiet: {ratio:.2f} (target <= 1.5)")
    print(summary("flood", args, {"model": args.model, "pace": args.pace, "flood_fps": args.flood_fps,
                                  "flood_side": args.flood_side, "flood_png_bytes": len(big[0]),
                                  "rounds": [{k: round(v, 2) for k, v in row.items()} for row in rows],
                                  "p95_flooded_over_quiet": round(ratio, 3)}, argv))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
