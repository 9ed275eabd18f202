"""Shared by the bench scripts: the machine line, sample frames, servers, statistics, the JSON summary.

Servers come from tests/servers.py (a real `vsod serve`, `python -m service.cli serve`, on a free port, ready when
/readyz answers), so a benchmark measures exactly what the tests start.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from service.backends import Backend  # noqa: E402
from service.messages import run_command  # noqa: E402
from tests.servers import REDIS_URL, Server, delete_prefix, redis_prefix, start_server, stop_server  # noqa: E402

if TYPE_CHECKING:  # the model is imported when a bench asks for it: torch is slow to import
    from service.model import Predictor

VIDEO = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
__all__ = ["REDIS_URL", "Server", "delete_prefix", "redis_prefix", "start_server", "stop_server"]


def run(main: Callable[[], int | None]) -> int:
    """A bench script's `main()`, its exit status returned; a bad input (an unknown model or store, a
    missing file, a server that will not start) is one line on stderr and exit 1, not a traceback."""
    return run_command(Path(sys.argv[0]).name, main)


def machine() -> str:
    """`lscpu`'s model name and the CPU count (what a figure must be quoted with)."""
    name = platform.processor() or platform.machine()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                name = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return f"{name}, {os.cpu_count()} cpus"


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def video_frames(count: int, path: Path = VIDEO, size: tuple[int, int] | None = None) -> list[np.ndarray]:
    """`count` RGB frames of a real video (looped if short), optionally resized to (height, width)."""
    capture = cv2.VideoCapture(str(path))
    frames: list[np.ndarray] = []
    while len(frames) < count:
        ok, bgr = capture.read()
        if not ok:
            if not frames:
                raise FileNotFoundError(f"cannot read frames from {path}")
            capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            continue
        if size is not None:
            bgr = cv2.resize(bgr, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames


def jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return data.tobytes()


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q / 100 * len(ordered) + 0.5)) - 1))]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def server_env(args: object, threads: int) -> dict[str, str]:
    """Environment for a benchmarked server: the model store and `threads` threads. OpenMP's wait
    policy is whatever this process has (unset: libgomp spins briefly, then sleeps), so the bare
    model and the server run alike. OMP_WAIT_POLICY=PASSIVE made 2 threads 3x slower at batch 1
    (17 vs 5 ms at 256x256): each of the graph's ~300 ops wakes a sleeping thread."""
    env = {"OMP_NUM_THREADS": str(threads)}
    store = getattr(args, "store", None)
    if store:
        env["VSOD_MODEL_STORE"] = str(store)
    return env


def bare_predictor(args: argparse.Namespace, threads: int) -> Predictor:
    """The model the server runs (same store, same backend: `args.backend`, default auto), in this process."""
    import torch

    from service.model import ModelStore, Predictor

    torch.set_num_threads(threads)
    store = ModelStore(getattr(args, "store", None)) if getattr(args, "store", None) else ModelStore()
    backend = "eager" if getattr(args, "eager", False) else getattr(args, "backend", "auto")
    # A name outside Backend is refused by StepRuntime, the one owner of that check.
    return Predictor.from_store(args.model, store, "cpu", cast(Backend, backend), threads)


def timed(fn: Callable[..., object], *a: object) -> float:
    start = time.perf_counter()
    fn(*a)
    return time.perf_counter() - start


def summary(bench: str, args: object, results: dict[str, object], argv: list[str] | None) -> str:
    """The last line every script prints: the numbers plus what is needed to quote them."""
    import torch

    line = {
        "bench": bench,
        **results,
        "torch": torch.__version__,
        "machine": machine(),
        "load_avg": load_avg(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join([f"bench/{Path(sys.argv[0]).name}", *(argv if argv is not None else sys.argv[1:])]),
    }
    return json.dumps(line)
