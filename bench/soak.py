"""Soak test: N concurrent WebSocket sessions plus clip uploads for M minutes against a real server and Redis.

    python bench/soak.py --sessions 8 --minutes 5          # the full run (docs/reliability.md)
    python bench/soak.py --sessions 2 --minutes 0.5        # a 30-second smoke
    python bench/soak.py --model vsod-student --store model_store --redis-url redis://127.0.0.1:6379/0

Loopback only and bounded: the server runs on 127.0.0.1, Redis must be on this machine, at most 32
sessions for at most 60 minutes. The script starts `vsod serve` (`python -m service.cli serve`) with short TTLs in a
fresh Redis key namespace, then:
- each session streams JPEG frames of a real video (opencv-doc's vtest.avi, else synthetic) at
  `--fps`, reading masks as they come (latest wins: frames the server cannot keep up with are
  dropped and counted), and reconnects every `--reconnect-every` seconds to resume its session;
- every `--clip-every` seconds a short clip is uploaded, polled to done and its zip fetched;
- the server's resident memory (VmRSS) is sampled throughout.
At the end it reports errors (must be 0), dropped frames, p50/p95 latency (client: send to mask;
server: arrival to mask), memory growth after warm-up (must stay bounded) and whether the Redis keys
fall back to the baseline once the TTLs pass. Prints a table, then one JSON line (the last line).
Exit status 0 only when all three hold.

Without `--model` the store's `vsod-student` is used when present, else a student with random
weights at 352x352 (same compute, meaningless masks; the report says which).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import cv2
import httpx
import numpy as np
import redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

VIDEO = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
MAX_SESSIONS, MAX_MINUTES = 32, 60.0


@dataclass
class Stats:
    errors: list[str] = field(default_factory=list)
    sent: int = 0
    answered: int = 0
    dropped: int = 0
    client_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    reconnects: int = 0
    clips_done: int = 0
    clip_frames: int = 0
    rss_mb: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, MB)

    def error(self, message: str) -> None:
        if len(self.errors) < 1000:  # bounded, like everything else here
            self.errors.append(message)
        print(f"error: {message}", file=sys.stderr)


# ---------------------------------------------------------------- setup


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load_frames(count: int, size: tuple[int, int]) -> list[bytes]:
    """JPEG frames (quality 85) at `size` (width, height): a real video when the machine has one."""
    frames: list[np.ndarray] = []
    capture = cv2.VideoCapture(str(VIDEO)) if VIDEO.exists() else None
    while capture is not None and len(frames) < count:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.resize(frame, size, interpolation=cv2.INTER_AREA))
    rng = np.random.default_rng(0)
    while len(frames) < count:  # synthetic fallback: noise with a moving bright block
        frame = rng.integers(30, 120, (size[1], size[0], 3), dtype=np.uint8)
        x = (len(frames) * 7) % max(1, size[0] - 80)
        frame[40:120, x : x + 80] = (40, 200, 240)
        frames.append(frame)
    return [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes() for f in frames]


def write_clip(path: Path, frames: list[bytes], fps: float = 10.0) -> Path:
    decoded = []
    for data in frames:
        frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if frame is None:
            raise ValueError("a frame is not a decodable image")
        decoded.append(frame)
    height, width = decoded[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (width, height))
    for frame in decoded:
        writer.write(frame)
    writer.release()
    return path


def model_env(args: argparse.Namespace, workdir: Path) -> tuple[dict[str, str], str]:
    """VSOD_MODEL/VSOD_MODEL_STORE for the server, and a description of the model for the report."""
    from service.model import Manifest, ModelStore, stkd_student
    from service.paths import default_store_root

    store = Path(args.store) if args.store else default_store_root()
    name = args.model or os.environ.get("VSOD_MODEL", "vsod-student")
    if (store / name / "manifest.json").exists():
        return {"VSOD_MODEL_STORE": str(store), "VSOD_MODEL": name}, f"{name} from {store}"
    if args.model:
        raise SystemExit(f"soak: no model {name!r} in {store}")
    import torch

    torch.manual_seed(0)
    random_store = ModelStore(workdir / "model_store")
    random_store.save(stkd_student().eval(), Manifest("soak-random", "stkd-student", {}, (352, 352), "soak", sha256=""),
                      report="# soak\nRandom weights: speed and robustness only.\n")
    return ({"VSOD_MODEL_STORE": str(random_store.root), "VSOD_MODEL": "soak-random"},
            "random-weight student at 352x352 (no vsod-student in the store)")


def start_server(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    full = {**os.environ, **env, "VSOD_HOST": "127.0.0.1", "VSOD_PORT": str(port), "VSOD_LOG_LEVEL": "warning",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], cwd=REPO, env=full, stdout=out,
                                   stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"soak: the server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    process.kill()
    raise SystemExit(f"soak: the server was not ready after 300 s:\n{log.read_text()[-3000:]}")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def count_keys(client: redis.Redis, prefix: str) -> int:
    return sum(1 for _ in client.scan_iter(match=f"{prefix}:*", count=1000))


# ---------------------------------------------------------------- load


async def session(index: int, ws_url: str, frames: list[bytes], args: argparse.Namespace, stop: float, stats: Stats) -> None:
    """One camera: paced frames, masks read as they come, a reconnect every `reconnect_every` s."""
    session_id = f"soak-{index}"
    expected_next = 0  # the frame index the server should resume at
    sent_index = index * 17  # cameras start at different points of the video
    while time.monotonic() < stop:
        leg_end = min(stop, time.monotonic() + args.reconnect_every)
        try:
            connection = await connect(f"{ws_url}/v1/stream?session_id={session_id}", max_size=None, open_timeout=60)
        except Exception as error:
            stats.error(f"{session_id}: connect failed: {type(error).__name__}: {error}")
            await asyncio.sleep(1)
            continue
        hello = json.loads(await connection.recv())
        if hello.get("frame") != expected_next:
            stats.error(f"{session_id}: resumed at frame {hello.get('frame')}, expected {expected_next}")
        base_dropped = int(hello.get("dropped", 0))
        sent_at: list[float] = []
        answered = 0
        last_dropped = [0]  # frames of this connection dropped so far, as the last mask reported

        async def reader() -> None:
            nonlocal answered, expected_next
            try:
                async for message in connection:
                    if isinstance(message, bytes):
                        continue
                    header = json.loads(message)
                    if header.get("type") != "mask":
                        stats.error(f"{session_id}: {header}")
                        continue
                    # Every frame sent is answered or dropped, in order: this mask answers frame
                    # number (masks so far + frames dropped before it was taken) of this connection.
                    position = answered + int(header["dropped"]) - base_dropped
                    if 0 <= position < len(sent_at):
                        stats.client_ms.append((time.perf_counter() - sent_at[position]) * 1000)
                    stats.server_ms.append(float(header["latency_ms"]))
                    if not header.get("temporal", True):
                        stats.error(f"{session_id}: frame {header['frame']} without temporal context")
                    answered += 1
                    expected_next = int(header["frame"]) + 1
                    last_dropped[0] = int(header["dropped"]) - base_dropped
            except ConnectionClosed:
                pass

        read = asyncio.create_task(reader())
        interval = 1.0 / args.fps
        next_send = time.monotonic()
        try:
            while time.monotonic() < leg_end:
                sent_at.append(time.perf_counter())
                await connection.send(frames[sent_index % len(frames)])
                sent_index += 1
                next_send += interval
                await asyncio.sleep(max(0.0, next_send - time.monotonic()))
            await connection.send(json.dumps({"type": "close"}))
            await asyncio.wait_for(read, 120)
            if connection.close_code != 1000:
                stats.error(f"{session_id}: closed with {connection.close_code}")
        except Exception as error:
            stats.error(f"{session_id}: {type(error).__name__}: {error}")
            read.cancel()
        finally:
            await connection.close()
        stats.sent += len(sent_at)
        stats.answered += answered
        # Frames dropped at the end (replaced by the last one) show in the last mask's count.
        stats.dropped += last_dropped[0]
        unaccounted = len(sent_at) - answered - last_dropped[0]
        if unaccounted != 0:
            stats.error(f"{session_id}: {unaccounted} frames neither answered nor counted as dropped")
        stats.reconnects += 1


async def clips(url: str, clip: Path, frames: int, args: argparse.Namespace, stop: float, stats: Stats) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        while time.monotonic() < stop:
            started = time.monotonic()
            try:
                response = await http.post("/v1/clips", files={"file": (clip.name, clip.read_bytes(), "video/x-msvideo")})
                if response.status_code != 202:
                    stats.error(f"clip upload: {response.status_code} {response.text[:200]}")
                else:
                    job_id = response.json()["job_id"]
                    while (status := (await http.get(f"/v1/jobs/{job_id}")).json())["status"] not in ("done", "failed"):
                        await asyncio.sleep(0.5)
                    if status["status"] != "done":
                        stats.error(f"clip job {job_id}: {status['error']}")
                    else:
                        result = await http.get(f"/v1/jobs/{job_id}/result")
                        if result.status_code != 200 or status["frames_done"] != frames:
                            stats.error(f"clip job {job_id}: result {result.status_code}, {status['frames_done']} frames")
                        else:
                            stats.clips_done += 1
                            stats.clip_frames += frames
            except httpx.HTTPError as error:
                stats.error(f"clip: {type(error).__name__}: {error}")
            await asyncio.sleep(max(0.0, min(args.clip_every - (time.monotonic() - started), stop - time.monotonic())))


async def memory(pid: int, start: float, stop: float, stats: Stats) -> None:
    while time.monotonic() < stop:
        stats.rss_mb.append((time.monotonic() - start, rss_mb(pid)))
        await asyncio.sleep(2)
    stats.rss_mb.append((time.monotonic() - start, rss_mb(pid)))


async def load(url: str, pid: int, frames: list[bytes], clip: Path, clip_frames: int, args: argparse.Namespace,
               stats: Stats) -> float:
    start = time.monotonic()
    stop = start + args.minutes * 60
    ws_url = url.replace("http://", "ws://")
    tasks = [session(i, ws_url, frames, args, stop, stats) for i in range(args.sessions)]
    tasks += [clips(url, clip, clip_frames, args, stop, stats), memory(pid, start, stop, stats)]
    await asyncio.gather(*tasks)
    return time.monotonic() - start


# ---------------------------------------------------------------- report


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(np.asarray(values), q))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=8, help=f"concurrent WebSocket sessions (1-{MAX_SESSIONS})")
    parser.add_argument("--minutes", type=float, default=5.0, help=f"length of the load phase (at most {MAX_MINUTES:g})")
    parser.add_argument("--fps", type=float, default=5.0, help="frames a second each session sends (at most 30)")
    parser.add_argument("--frame-size", type=int, nargs=2, default=(640, 480), metavar=("W", "H"))
    parser.add_argument("--clip-every", type=float, default=20.0, help="seconds between clip uploads")
    parser.add_argument("--clip-frames", type=int, default=30, help="frames in each uploaded clip")
    parser.add_argument("--reconnect-every", type=float, default=60.0, help="seconds before a session reconnects")
    parser.add_argument("--session-ttl", type=float, default=5.0, help="VSOD_SESSION_TTL_S for the soak server")
    parser.add_argument("--job-ttl", type=float, default=20.0, help="VSOD_JOB_TTL_S for the soak server")
    parser.add_argument("--max-rss-growth-mb", type=float, default=64.0,
                        help="largest allowed resident-memory growth after warm-up")
    parser.add_argument("--redis-url", default=os.environ.get("VSOD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--model", help="model name in the store (default: vsod-student if present)")
    parser.add_argument("--store", help="model store folder (default: $VSOD_MODEL_STORE or ./model_store)")
    args = parser.parse_args(argv)
    if not (1 <= args.sessions <= MAX_SESSIONS and 0 < args.minutes <= MAX_MINUTES and 0 < args.fps <= 30):
        parser.error(f"--sessions 1-{MAX_SESSIONS}, --minutes up to {MAX_MINUTES:g}, --fps up to 30")
    if (urlparse(args.redis_url).hostname or "") not in LOOPBACK:
        parser.error("the soak runs on loopback only: --redis-url must point at this machine")

    workdir = Path(tempfile.mkdtemp(prefix="vsod-soak-"))
    prefix = f"vsodsoak-{uuid.uuid4().hex[:10]}"
    client = redis.Redis.from_url(args.redis_url)
    client.ping()
    baseline = count_keys(client, prefix)
    env, model = model_env(args, workdir)
    env.update({"VSOD_REDIS_URL": args.redis_url, "VSOD_REDIS_PREFIX": prefix, "VSOD_SESSION_TTL_S": str(args.session_ttl),
                "VSOD_JOB_TTL_S": str(args.job_ttl), "VSOD_MAX_STREAM_FPS": str(max(60.0, args.fps * 2))})
    frames = load_frames(120, tuple(args.frame_size))
    clip = write_clip(workdir / "clip.avi", frames[: args.clip_frames])
    log = workdir / "server.log"
    process, url = start_server(env, log)
    stats = Stats()
    print(f"soak: {args.sessions} sessions x {args.fps:g} fps + a {args.clip_frames}-frame clip every "
          f"{args.clip_every:g} s for {args.minutes:g} min against {url} (model: {model}; Redis prefix {prefix})")
    try:
        elapsed = asyncio.run(load(url, process.pid, frames, clip, args.clip_frames, args, stats))
        redis_peak = count_keys(client, prefix)
        # Keys must expire: wait out the longest TTL (plus slack for Redis's lazy expiry sweep).
        deadline = time.monotonic() + max(args.session_ttl, args.job_ttl) + 15
        while (keys_left := count_keys(client, prefix)) > baseline and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
    server_log = log.read_text(errors="replace")
    for line in server_log.splitlines():
        if " ERROR " in line or line.startswith("Traceback") or "Exception" in line:
            stats.error(f"server log: {line[:200]}")

    # Warm-up (allocator arenas, lazy torch init, first clip conversions) is not a leak: growth is
    # counted from a quarter of the run (at most a minute in) to the end.
    warm = [mb for t, mb in stats.rss_mb if t >= min(60.0, elapsed * 0.25)] or [mb for _, mb in stats.rss_mb]
    growth = warm[-1] - warm[0] if warm else float("nan")
    keys_ok = keys_left <= baseline
    rss_ok = growth <= args.max_rss_growth_mb
    summary = {
        "errors": len(stats.errors), "sessions": args.sessions, "minutes": round(elapsed / 60, 2), "fps_per_session": args.fps,
        "frames_sent": stats.sent, "frames_answered": stats.answered, "frames_dropped": stats.dropped,
        "dropped_pct": round(100 * stats.dropped / stats.sent, 1) if stats.sent else None,
        "client_latency_ms_p50": percentile(stats.client_ms, 50), "client_latency_ms_p95": percentile(stats.client_ms, 95),
        "server_latency_ms_p50": percentile(stats.server_ms, 50), "server_latency_ms_p95": percentile(stats.server_ms, 95),
        "reconnects": stats.reconnects, "clips_done": stats.clips_done, "clip_frames": stats.clip_frames,
        "rss_mb_after_warmup": round(warm[0], 1) if warm else None, "rss_mb_end": round(warm[-1], 1) if warm else None,
        "rss_mb_peak": round(max(mb for _, mb in stats.rss_mb), 1) if stats.rss_mb else None,
        "rss_growth_mb": round(growth, 1), "rss_bounded": rss_ok,
        # Ten points of (seconds, MB): a leak climbs steadily, warm-up flattens out.
        "rss_mb_trajectory": [[round(t), round(mb)] for t, mb in stats.rss_mb[:: max(1, len(stats.rss_mb) // 10)]],
        "redis_keys_baseline": baseline, "redis_keys_at_end_of_load": redis_peak, "redis_keys_after_ttl": keys_left,
        "redis_back_to_baseline": keys_ok, "model": model, "frame_size": list(args.frame_size),
        "command": "python bench/soak.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus".replace("  ", " "),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }
    for key in ("client_latency_ms_p50", "client_latency_ms_p95", "server_latency_ms_p50", "server_latency_ms_p95"):
        summary[key] = round(summary[key], 1) if summary[key] is not None else None
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        print(f"{key.ljust(width)}  {value}")
    for message in stats.errors[:20]:
        print(f"  error: {message}")
    client.close()
    passed = not stats.errors and rss_ok and keys_ok
    if passed:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"soak: failed; the server log is in {log}", file=sys.stderr)
    print(json.dumps(summary))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
