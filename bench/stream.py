"""One live stream end to end (JPEG in, PNG out, through a real server and Redis) vs the bare model.

    python bench/stream.py --model vsod-student --threads 1   # 100 frames of vtest.avi, lockstep and 2 in flight
    python bench/stream.py --model vsod-student --inflight 2 --frames 300
    python bench/stream.py --model vsod-student --threads 1 --backends onnxruntime torchscript

The bare model is `Predictor.step` in this process on the same decoded frames (resize in, mask
resize out, the same backend the server runs), state carried frame to frame. The stream is
one WebSocket session on a server started here (`vsod serve`, Redis session store),
frames sent as pre-encoded JPEG so the client costs next to nothing, masks asked for as PNG.
`--inflight 1` is lockstep (next frame after the mask: every stage in series, a latency figure);
`--inflight 2` keeps one frame waiting at the server, as a camera that sends at its own pace does
(the server never drops it: one may wait), so decoding, the state write-back and encoding overlap
the model. Both run by default, one after the other on the same server, each against the same bare
model figure; the issue's target (>= 0.8) is about a live camera, the 2-in-flight row.

`--backends A B ...` (VSOD_BACKEND values; default `auto`, what a server picks by itself) builds a
bare model and starts a server for each; every round runs each backend's bare model and server in
turn (the order rotating), and `versus` gives each backend's ms per frame over the first's (bare
model and each server mode: the median of per-round ratios, >1 = the first is faster).

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
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    REDIS_URL,
    Server,
    bare_predictor,
    delete_prefix,
    jpeg,
    median,
    redis_prefix,
    run,
    server_env,
    start_server,
    stop_server,
    summary,
    video_frames,
)

from service.backends import BACKENDS

if TYPE_CHECKING:  # imported by bare_predictor when a bench runs: torch is slow to import
    from service.model import Predictor

SPLIT = ("decode", "wait", "state_get", "model", "state_put", "encode")


def bench_bare(predictor: Predictor, frames: list) -> dict[str, float]:
    """The bare model over the frames, its state carried from frame to frame: frames/s and ms/frame."""
    state = None
    start = time.perf_counter()
    for frame in frames:
        _, state = predictor.step(frame, state)
    elapsed = time.perf_counter() - start
    return {"fps": len(frames) / elapsed, "ms_per_frame": elapsed * 1000 / len(frames)}


def codec_costs(predictor: Predictor, frames: list) -> dict[str, float]:
    """What the server adds around the model, timed alone in this process for reference."""
    from service.video import decode_image_bytes, encode_png

    jpegs = [jpeg(f) for f in frames]
    masks = [predictor.step(f)[0] for f in frames]
    start = time.perf_counter()
    for data in jpegs:
        decode_image_bytes(data)
    decode_ms = (time.perf_counter() - start) * 1000 / len(jpegs)
    start = time.perf_counter()
    for mask in masks:
        encode_png(mask)
    return {"decode_ms": decode_ms, "encode_ms": (time.perf_counter() - start) * 1000 / len(masks)}


def stream_frames(url: str, payloads: list[bytes], warmup: int, inflight: int) -> dict[str, Any]:
    from websockets.sync.client import connect

    with connect(f"{url}/v1/stream", max_size=None, open_timeout=60) as ws:
        hello = json.loads(ws.recv())
        assert hello["type"] == "session", hello
        ws.send(json.dumps({"type": "config", "format": "png"}))
        json.loads(ws.recv())

        def run(chunk: list[bytes]) -> tuple[float, list[float], list[dict[str, Any]], int]:
            sent: list[float] = []
            rtts: list[float] = []
            headers: list[dict[str, Any]] = []
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
    split = {key: median([float(h["timings_ms"][key]) for h in headers]) for key in SPLIT}
    server = [float(h["latency_ms"]) + float(h["timings_ms"]["encode"]) for h in headers]
    split["transport"] = median([rtt - s for rtt, s in zip(rtts, server, strict=True)])
    dropped = int(headers[-1]["dropped"]) if headers else 0
    return {"fps": round(count / elapsed, 2), "rtt_ms_p50": round(median(rtts), 3),
            "split_ms": {k: round(v, 3) for k, v in split.items()}, "mask_bytes": round(size / count),
            "dropped": dropped, "batch": median([float(h["timings_ms"]["batch"]) for h in headers])}


def _label(inflight: int) -> str:
    return "lockstep" if inflight == 1 else f"{inflight} in flight"


def versus(rounds: dict[str, list[dict[str, Any]]], backends: list[str], inflight: list[int]) -> dict[str, dict[str, float]]:
    """Each backend's ms per frame over the first backend's (bare model, then each server mode): the
    median over rounds of per-round ratios, so >1 means the first backend was faster."""
    reference = backends[0]
    out: dict[str, dict[str, float]] = {}
    for backend in backends[1:]:
        pairs = list(zip(rounds[backend], rounds[reference], strict=True))
        # ms per frame is 1000 / fps: other's ms over the reference's = reference's fps over other's
        cells = {"bare": median([float(ref["bare"]["fps"]) / float(other["bare"]["fps"]) for other, ref in pairs])}
        for n in inflight:
            cells[_label(n)] = median([float(ref["streams"][n]["fps"]) / float(other["streams"][n]["fps"])
                                       for other, ref in pairs])
        out[f"{backend}/{reference}"] = {k: round(v, 3) for k, v in cells.items()}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vsod-student")
    parser.add_argument("--store", help="model store folder (default: $VSOD_MODEL_STORE or ./model_store)")
    parser.add_argument("--frames", type=int, default=100, help="timed frames per round")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2, help="threads of the bare model (and the server): VSOD_THREADS")
    parser.add_argument("--server-threads", type=int, help="the server's threads (default: --threads)")
    parser.add_argument("--inflight", type=int, nargs="+", default=[1, 2],
                        help="frames the client keeps in flight, one run each (1: lockstep; default 1 2)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="resize the video's frames")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality of the sent frames")
    parser.add_argument("--redis", default=REDIS_URL, help="Redis URL for sessions ('none': in-process store)")
    parser.add_argument("--backends", nargs="+", default=["auto"], choices=BACKENDS,
                        help="VSOD_BACKEND of the bare model and a server each, alternating in every round; "
                        "ratios are over the first (default: auto)")
    parser.add_argument("--eager", action="store_true", help="the same as --backends eager")
    parser.add_argument("--rounds", type=int, default=5, help="bare/server rounds, interleaved (median ratio)")
    parser.add_argument("--scaled-jpeg", action="store_true", help="VSOD_SCALED_JPEG_DECODE=true on the server")
    args = parser.parse_args(argv)
    backends: list[str] = ["eager"] if args.eager else list(dict.fromkeys(args.backends))
    server_threads = args.server_threads or args.threads

    frames = video_frames(args.frames + args.warmup, size=tuple(args.size) if args.size else None)
    payloads = [jpeg(frame, args.quality) for frame in frames]
    predictors = {b: bare_predictor(argparse.Namespace(**{**vars(args), "backend": b, "eager": False}), args.threads)
                  for b in backends}
    for predictor in predictors.values():
        bench_bare(predictor, frames[: args.warmup])  # warm-up
    codecs = codec_costs(predictors[backends[0]], frames[: args.warmup])
    prefix = redis_prefix()
    settings: dict[str, Any] = {"VSOD_MODEL": args.model, "VSOD_THREADS": server_threads,
                                   "VSOD_MAX_STREAM_FPS": 0, "VSOD_MAX_STREAM_PIXELS_PER_S": 0,
                                   "VSOD_SCALED_JPEG_DECODE": str(args.scaled_jpeg).lower()}
    if args.redis != "none":
        settings.update(VSOD_REDIS_URL=args.redis, VSOD_REDIS_PREFIX=prefix)
    servers: dict[str, Server] = {}
    rounds: dict[str, list[dict[str, Any]]] = {b: [] for b in backends}
    try:  # rounds interleave the bare model and the server, and the backends (their order rotating),
        # so every figure in a ratio was taken within seconds of the others
        for backend in backends:
            servers[backend] = start_server(server_env(args, server_threads), **settings, VSOD_BACKEND=backend)
        for index in range(args.rounds):
            for backend in backends[index % len(backends):] + backends[: index % len(backends)]:
                bare = bench_bare(predictors[backend], frames[args.warmup :])
                streams = {n: stream_frames(servers[backend].ws_url, payloads, args.warmup, n) for n in args.inflight}
                ratios = {n: float(stream["fps"]) / bare["fps"] for n, stream in streams.items()}
                rounds[backend].append({"bare": bare, "streams": streams, "ratios": ratios})
    finally:
        for server in servers.values():
            stop_server(server)
        if args.redis != "none":
            delete_prefix(prefix)
    height, width = frames[0].shape[:2]
    modes = {b: predictors[b].runtime.mode for b in backends}
    print(f"one stream, {width}x{height} JPEG q{args.quality} in, PNG out, {args.threads} threads "
          f"(server {server_threads}), model {args.model}{', scaled JPEG decode' if args.scaled_jpeg else ''}")
    by_backend: dict[str, dict[str, Any]] = {}
    for backend in backends:
        print(f"backend {backend} ({modes[backend]})")
        print(f"{'round':<6} {'bare fps':>9} " + " ".join(f"{_label(n):>22}" for n in args.inflight))
        for index, one in enumerate(rounds[backend], 1):
            cells = [f"{one['streams'][n]['fps']:>8.1f} fps = {one['ratios'][n]:.3f}x" for n in args.inflight]
            print(f"{index:<6} {one['bare']['fps']:>9.1f} " + " ".join(f"{c:>22}" for c in cells))
        medians = {n: median([one["ratios"][n] for one in rounds[backend]]) for n in args.inflight}
        print("median end-to-end / bare: " + ", ".join(f"{_label(n)} {medians[n]:.3f}" for n in args.inflight)
              + " (target >= 0.8 for a live camera: frames in flight)")
        last = rounds[backend][-1]["streams"]
        for n in args.inflight:
            stream = last[n]
            print(f"per-frame split (last round), {_label(n)}, median ms: "
                  + ", ".join(f"{k} {v:.2f}" for k, v in stream["split_ms"].items())
                  + f"; round trip p50 {stream['rtt_ms_p50']:.2f}, dropped {stream['dropped']}")
        by_backend[backend] = {
            "mode": modes[backend],
            "rounds": json.loads(json.dumps([{"bare": r["bare"], "streams": {str(k): v for k, v in r["streams"].items()},
                                              "ratios": {str(k): round(v, 3) for k, v in r["ratios"].items()}}
                                             for r in rounds[backend]], default=float)),
            "ratios": {str(k): round(v, 3) for k, v in medians.items()},
        }
    compared = versus(rounds, backends, args.inflight)
    for name, per_frame_ms in compared.items():
        print(f"{name} ms per frame (median of rounds): " + ", ".join(f"{k} {v:.3f}" for k, v in per_frame_ms.items()))
    last = rounds[backends[0]][-1]["streams"]
    print(f"mask {last[args.inflight[0]]['mask_bytes'] / 1024:.1f} KiB; alone in this process: "
          f"decode {codecs['decode_ms']:.2f} ms, PNG encode {codecs['encode_ms']:.2f} ms")
    first = by_backend[backends[0]]
    results = {"model": args.model, "backends": backends, "mode": first["mode"], "frame_size": [height, width],
               "threads": args.threads, "server_threads": server_threads, "frames": args.frames,
               "scaled_jpeg": args.scaled_jpeg, "codecs": {k: round(v, 3) for k, v in codecs.items()},
               "rounds": first["rounds"], "ratios": first["ratios"], "target": 0.8,
               "by_backend": by_backend, "versus": compared}
    print(summary("stream", args, results, argv))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
