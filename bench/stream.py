"""One live stream end to end (JPEG in, PNG out, through a real server and Redis) vs the bare model.

    python bench/stream.py --model vsod-student            # 150 frames of vtest.avi, 2 threads
    python bench/stream.py --model vsod-student --inflight 2 --frames 300

The bare model is `Predictor.step` in this process on the same decoded frames (resize in, mask
resize out, the same optimised graph the server runs), state carried frame to frame. The stream is
one WebSocket session on a server started here (`python -m service.server`, Redis session store),
frames sent as pre-encoded JPEG so the client costs next to nothing, masks asked for as PNG.
`--inflight 1` is lockstep (next frame after the mask); `--inflight 2` keeps one frame waiting at
the server, as a camera that sends at its own pace does (the server never drops it: one may wait).

The per-frame split comes from the mask message's `timings_ms` (decode, wait, state_get, model,
state_put, encode); transport = client round trip - (server latency + encode). Prints a table,
then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    REDIS_URL,
    bare_predictor,
    delete_prefix,
    jpeg,
    median,
    redis_prefix,
    server_env,
    start_server,
    stop_server,
    summary,
    video_frames,
)

SPLIT = ("decode", "wait", "state_get", "model", "state_put", "encode")


def bench_bare(args: argparse.Namespace, frames: list) -> dict[str, float]:
    import cv2

    from service.video import decode_image_bytes, encode_png

    predictor = bare_predictor(args, args.threads)
    state = None
    for frame in frames[: args.warmup]:
        _, state = predictor.step(frame, state)
    state = None
    start = time.perf_counter()
    masks = []
    for frame in frames[args.warmup :]:
        mask, state = predictor.step(frame, state)
        masks.append(mask)
    elapsed = time.perf_counter() - start
    count = len(frames) - args.warmup
    # What the server adds around the model, timed alone here for reference.
    jpegs = [jpeg(f) for f in frames[: args.warmup]]
    start = time.perf_counter()
    for data in jpegs:
        decode_image_bytes(data)
    decode_ms = (time.perf_counter() - start) * 1000 / len(jpegs)
    start = time.perf_counter()
    for mask in masks[: args.warmup]:
        encode_png(mask)
    encode_ms = (time.perf_counter() - start) * 1000 / min(len(masks), args.warmup)
    del cv2
    return {"fps": count / elapsed, "ms_per_frame": elapsed * 1000 / count, "mode": predictor.runtime.mode,
            "decode_ms": decode_ms, "encode_ms": encode_ms}


def stream_frames(url: str, payloads: list[bytes], warmup: int, inflight: int) -> dict[str, object]:
    from websockets.sync.client import connect

    with connect(f"{url}/v1/stream", max_size=None, open_timeout=60) as ws:
        hello = json.loads(ws.recv())
        assert hello["type"] == "session", hello
        ws.send(json.dumps({"type": "config", "format": "png"}))
        json.loads(ws.recv())

        def run(chunk: list[bytes]) -> tuple[float, list[float], list[dict[str, object]], int]:
            sent: list[float] = []
            rtts: list[float] = []
            headers: list[dict[str, object]] = []
            size = 0
            start = time.perf_counter()
            for data in chunk[:inflight]:
                sent.append(time.perf_counter())
                ws.send(data)
            for index in range(len(chunk)):
                header = json.loads(ws.recv(timeout=60))
                if header.get("type") != "mask":
                    raise RuntimeError(f"unexpected message: {header}")
                body = ws.recv(timeout=60)
                rtts.append((time.perf_counter() - sent[index]) * 1000)
                headers.append(header)
                size += len(body)
                if index + inflight < len(chunk):
                    sent.append(time.perf_counter())
                    ws.send(chunk[index + inflight])
            return time.perf_counter() - start, rtts, headers, size

        run(payloads[:warmup])
        elapsed, rtts, headers, size = run(payloads[warmup:])
    count = len(payloads) - warmup
    split = {key: median([float(h["timings_ms"][key]) for h in headers]) for key in SPLIT}  # type: ignore[index]
    server = [float(h["latency_ms"]) + float(h["timings_ms"]["encode"]) for h in headers]  # type: ignore[index]
    split["transport"] = median([rtt - s for rtt, s in zip(rtts, server)])
    dropped = int(headers[-1]["dropped"]) if headers else 0  # type: ignore[arg-type]
    return {"fps": round(count / elapsed, 2), "rtt_ms_p50": round(median(rtts), 3),
            "split_ms": {k: round(v, 3) for k, v in split.items()}, "mask_bytes": round(size / count),
            "dropped": dropped, "batch": median([float(h["timings_ms"]["batch"]) for h in headers])}  # type: ignore[index]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vsod-student")
    parser.add_argument("--store", help="model store folder (default: $VSOD_MODEL_STORE or ./model_store)")
    parser.add_argument("--frames", type=int, default=150, help="timed frames")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the bare model (and the server)")
    parser.add_argument("--server-threads", type=int, help="the server's torch threads (default: --threads)")
    parser.add_argument("--inflight", type=int, default=1, help="frames the client keeps in flight (1: lockstep)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="resize the video's frames")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality of the sent frames")
    parser.add_argument("--redis", default=REDIS_URL, help="Redis URL for sessions ('none': in-process store)")
    parser.add_argument("--eager", action="store_true", help="VSOD_OPTIMIZE=false, bare model eager too")
    args = parser.parse_args(argv)
    server_threads = args.server_threads or args.threads

    frames = video_frames(args.frames + args.warmup, size=tuple(args.size) if args.size else None)
    payloads = [jpeg(frame, args.quality) for frame in frames]
    bare = bench_bare(args, frames)
    prefix = redis_prefix()
    settings: dict[str, object] = {"VSOD_MODEL": args.model, "VSOD_TORCH_THREADS": server_threads,
                                   "VSOD_MAX_STREAM_FPS": 0, "VSOD_OPTIMIZE": str(not args.eager).lower()}
    if args.redis != "none":
        settings.update(VSOD_REDIS_URL=args.redis, VSOD_REDIS_PREFIX=prefix)
    server = start_server(server_env(args, server_threads), **settings)
    try:
        stream = stream_frames(server.ws_url, payloads, args.warmup, args.inflight)
    finally:
        stop_server(server)
        if args.redis != "none":
            delete_prefix(prefix)
    ratio = stream["fps"] / bare["fps"]  # type: ignore[operator]
    height, width = frames[0].shape[:2]
    print(f"one stream, {width}x{height} JPEG q{args.quality} in, PNG out, {args.threads} threads "
          f"(server {server_threads}), "
          f"inflight {args.inflight}, model {args.model} ({bare['mode']})")
    print(f"{'path':<22} {'frames/s':>9} {'ms/frame':>9}")
    print(f"{'bare model':<22} {bare['fps']:>9.1f} {bare['ms_per_frame']:>9.2f}")
    print(f"{'server end to end':<22} {stream['fps']:>9.1f} {1000 / stream['fps']:>9.2f}")  # type: ignore[operator]
    print(f"ratio end-to-end / bare: {ratio:.3f} (target >= 0.8)")
    print("per-frame split, median ms: " + ", ".join(f"{k} {v:.2f}" for k, v in stream["split_ms"].items()))  # type: ignore[union-attr]
    print(f"round trip p50 {stream['rtt_ms_p50']:.2f} ms, mask {stream['mask_bytes'] / 1024:.1f} KiB, "
          f"dropped {stream['dropped']}; alone in this process: decode {bare['decode_ms']:.2f} ms, "
          f"PNG encode {bare['encode_ms']:.2f} ms")
    results = {"model": args.model, "frame_size": [height, width], "threads": args.threads,
               "server_threads": server_threads, "inflight": args.inflight,
               "frames": args.frames, "bare": {k: round(v, 3) if isinstance(v, float) else v for k, v in bare.items()},
               "stream": json.loads(json.dumps(stream, default=float)), "ratio": round(ratio, 3), "target": 0.8}
    print(summary("stream", args, results, argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
