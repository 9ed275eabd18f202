"""Many live streams at once: aggregate frames/s and p50/p95 latency, with and without micro-batching.

    python bench/concurrency.py --model vsod-student                    # 1, 4, 16 sessions, 8 s each
    python bench/concurrency.py --model vsod-student --sessions 4 --pace 10

For each engine setting (unbatched: VSOD_BATCH_SIZE=1; batched: --batch-size/--batch-wait-ms) a
real server is started with Redis as the session store; N WebSocket sessions (one asyncio client
process, pre-encoded JPEG frames of vtest.avi, PNG masks back) stream in lockstep (each sends its
next frame when its mask arrives) for --seconds after --warmup-s. Latency is the client's round
trip per frame. `--pace F` instead sends F frames/s per session (a camera), which measures the
latency at a load below saturation; each camera starts at its own random phase within the frame
period (seeded: the same phases every run), as independent cameras do (`--same-phase`: all at once,
the worst case: every tick brings one frame of each session together). The bare model's ms/frame (`Predictor.step`, batch 1, same
threads) is measured first, in this process: the targets are batched/unbatched >= 1.3 at 16
sessions and p95 at 4 sessions <= 3x the bare ms/frame. `--backend` sets VSOD_BACKEND for the servers
and the bare model alike. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    REDIS_URL,
    bare_predictor,
    delete_prefix,
    jpeg,
    median,
    percentile,
    redis_prefix,
    run,
    server_env,
    start_server,
    stop_server,
    summary,
    video_frames,
)


def bare_ms(args: argparse.Namespace, frames: list) -> float:
    predictor = bare_predictor(args, args.threads)
    state = None
    for frame in frames[:10]:
        _, state = predictor.step(frame, state)
    times = []
    for frame in frames[10:]:
        start = time.perf_counter()
        _, state = predictor.step(frame, state)
        times.append((time.perf_counter() - start) * 1000)
    return median(times)


async def one_session(url: str, payloads: list[bytes], offset: int, start_at: float, stop_at: float,
                      pace: float | None, phase: float, latencies: list[float], batches: list[float]) -> int:
    from websockets.asyncio.client import connect

    done = 0
    async with connect(f"{url}/v1/stream", max_size=None, open_timeout=60) as ws:
        json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "config", "format": "png"}))
        await ws.recv()
        index, next_send = offset, time.perf_counter() + phase
        while (now := time.perf_counter()) < stop_at:
            if pace:
                await asyncio.sleep(max(0.0, next_send - now))
                next_send = max(next_send + 1 / pace, time.perf_counter() - 1 / pace)  # no catch-up bursts
            sent = time.perf_counter()
            await ws.send(payloads[index % len(payloads)])
            header = json.loads(await ws.recv())
            if header.get("type") != "mask":
                raise RuntimeError(f"unexpected message: {header}")
            await ws.recv()
            finished = time.perf_counter()
            if start_at <= sent and finished <= stop_at:
                latencies.append((finished - sent) * 1000)
                batches.append(float(header["timings_ms"]["batch"]))
                done += 1
            index += 1
    return done


async def load(url: str, payloads: list[bytes], sessions: int, warmup_s: float, seconds: float,
               pace: float | None, same_phase: bool = False) -> dict[str, float]:
    latencies: list[float] = []
    batches: list[float] = []
    start_at = time.perf_counter() + warmup_s
    stop_at = start_at + seconds
    phases = [0.0 if same_phase or not pace else random.Random(i).random() / pace for i in range(sessions)]
    counts = await asyncio.gather(*(
        one_session(url, payloads, i * 7, start_at, stop_at, pace, phases[i], latencies, batches) for i in range(sessions)
    ))
    return {"sessions": sessions, "fps": sum(counts) / seconds, "p50_ms": percentile(latencies, 50),
            "p95_ms": percentile(latencies, 95), "mean_batch": sum(batches) / max(1, len(batches)),
            "frames": sum(counts)}


def run_server(args: argparse.Namespace, payloads: list[bytes], batch_size: int, wait_ms: float,
               sessions: list[int], pace: float | None) -> list[dict[str, float]]:
    prefix = redis_prefix()
    server = start_server(server_env(args, args.threads), VSOD_MODEL=args.model, VSOD_THREADS=args.threads,
                          VSOD_MAX_STREAM_FPS=0, VSOD_MAX_STREAM_PIXELS_PER_S=0, VSOD_REDIS_URL=args.redis,
                          VSOD_REDIS_PREFIX=prefix,
                          VSOD_BATCH_SIZE=batch_size, VSOD_BATCH_WAIT_MS=wait_ms)
    try:
        return [asyncio.run(load(server.ws_url, payloads, n, args.warmup_s, args.seconds, pace, args.same_phase))
                for n in sessions]
    finally:
        stop_server(server)
        delete_prefix(prefix)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vsod-student")
    parser.add_argument("--store", help="model store folder (default: $VSOD_MODEL_STORE or ./model_store)")
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per point")
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8, help="the batched server's VSOD_BATCH_SIZE")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0, help="the batched server's VSOD_BATCH_WAIT_MS")
    parser.add_argument("--pace", type=float, help="frames/s per session instead of lockstep")
    parser.add_argument("--same-phase", action="store_true", help="paced sessions all send at the same instants")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="resize the video's frames")
    parser.add_argument("--redis", default=REDIS_URL)
    parser.add_argument("--backend", default="auto", choices=["auto", "onnxruntime", "torchscript", "eager"],
                        help="VSOD_BACKEND of both servers (default auto)")
    args = parser.parse_args(argv)
    os.environ["VSOD_BACKEND"] = args.backend  # both servers, and the bare model (bare_predictor reads args.backend)

    frames = video_frames(60, size=tuple(args.size) if args.size else None)
    payloads = [jpeg(frame) for frame in frames]
    bare = bare_ms(args, frames)
    configs = {"unbatched": (1, 0.0), "batched": (args.batch_size, args.batch_wait_ms)}
    results = {name: run_server(args, payloads, size, wait, args.sessions, args.pace)
               for name, (size, wait) in configs.items()}
    height, width = frames[0].shape[:2]
    mode = (f"paced {args.pace:g} frames/s per session, {'same' if args.same_phase else 'random'} phases"
            if args.pace else "lockstep")
    print(f"{width}x{height} JPEG in, PNG out, {args.threads} threads, {mode}, model {args.model}; "
          f"bare model {bare:.2f} ms/frame; batched = batch {args.batch_size}, wait {args.batch_wait_ms:g} ms")
    print(f"{'engine':<10} {'sessions':>8} {'frames/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'batch':>6}")
    for name, rows in results.items():
        for row in rows:
            print(f"{name:<10} {row['sessions']:>8} {row['fps']:>9.1f} {row['p50_ms']:>8.1f} {row['p95_ms']:>8.1f} "
                  f"{row['mean_batch']:>6.2f}")
    ratios = {str(n): round(b["fps"] / u["fps"], 3) for n, u, b in zip(args.sessions, results["unbatched"],
                                                                        results["batched"], strict=True)}
    p95_at_4 = {name: next((r["p95_ms"] / bare for r in rows if r["sessions"] == 4), None) for name, rows in results.items()}
    print("batched/unbatched frames/s: " + ", ".join(f"{n} sessions {r:.2f}" for n, r in ratios.items())
          + " (target >= 1.3 at 16)")
    print("p95 at 4 sessions / bare ms: " + ", ".join(f"{k} {v:.2f}" for k, v in p95_at_4.items() if v is not None)
          + " (target <= 3)")
    rounded = {name: [{k: round(v, 2) for k, v in row.items()} for row in rows] for name, rows in results.items()}
    print(summary("concurrency", args, {
        "model": args.model, "frame_size": [height, width], "threads": args.threads, "mode": mode,
        "batch_size": args.batch_size, "batch_wait_ms": args.batch_wait_ms, "bare_ms_per_frame": round(bare, 3),
        "results": rounded, "batched_over_unbatched": ratios,
        "p95_at_4_over_bare": {k: round(v, 3) for k, v in p95_at_4.items() if v is not None},
    }, argv))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
