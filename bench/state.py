"""Session state: bytes per session, and Redis round trips (get_many/put_many vs N single calls).

    python bench/state.py --model vsod-student
    python bench/state.py --input 352 352 --sessions 1 8 16 --runs 200

The state is what the engine moves per frame: `SessionState.to_bytes()` (service/live/state.py),
the model's carried features (the previous frame's projected stride-32 tensor, float32) plus the
session's bookkeeping. Timings go through `RedisSessionStore`, the server's own asyncio client code,
so they include (de)serialisation.
Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REDIS_URL, delete_prefix, median, redis_prefix, run, summary

from service.live import RedisSessionStore, SessionState
from service.model import ModelStore


def session_state(args: argparse.Namespace) -> tuple[SessionState, tuple[int, ...]]:
    if args.input:
        from service.model import stkd_student

        model, model_id, size = stkd_student(), "fresh-student", tuple(args.input)
    else:
        store = ModelStore(args.store) if args.store else ModelStore()
        model, manifest = store.load(args.model)
        model_id, size = manifest.model_id, tuple(manifest.input_size)
    shape = model.state_shape(size)  # type: ignore[arg-type]
    features = np.random.default_rng(0).random(shape, dtype=np.float32)
    now = time.time()
    return SessionState(model_id, size, 7, {"features": features}, now, now), shape  # type: ignore[arg-type]


async def round_trips(args: argparse.Namespace, state: SessionState) -> dict[str, dict[str, float]]:
    from redis.asyncio import Redis

    prefix = redis_prefix()
    client = Redis.from_url(args.redis)
    cache = RedisSessionStore(client, prefix, ttl_s=120)
    out: dict[str, dict[str, float]] = {}
    try:
        for n in args.sessions:
            records = [(f"s{i}", state) for i in range(n)]
            ids = [sid for sid, _ in records]
            await cache.put_many(records)
            timings: dict[str, list[float]] = {"get_many": [], "n_gets": [], "put_many": [], "n_puts": []}
            for _ in range(args.runs):
                start = time.perf_counter()
                await cache.get_many(ids)
                timings["get_many"].append(time.perf_counter() - start)
                start = time.perf_counter()
                for sid in ids:
                    await cache.get(sid)
                timings["n_gets"].append(time.perf_counter() - start)
                start = time.perf_counter()
                await cache.put_many(records)
                timings["put_many"].append(time.perf_counter() - start)
                start = time.perf_counter()
                for sid, one in records:
                    await cache.put(sid, one)
                timings["n_puts"].append(time.perf_counter() - start)
            out[str(n)] = {key: round(median(values) * 1000, 4) for key, values in timings.items()}
    finally:
        await client.aclose()
        delete_prefix(prefix)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vsod-student")
    parser.add_argument("--store", help="model store folder (default: $VSOD_MODEL_STORE or ./model_store)")
    parser.add_argument("--input", type=int, nargs=2, metavar=("H", "W"), help="a fresh student at this size instead")
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--redis", default=REDIS_URL)
    args = parser.parse_args(argv)

    state, shape = session_state(args)
    model_id, size, record = state.model_id, state.input_size, state.to_bytes()
    timings = asyncio.run(round_trips(args, state))
    print(f"model {model_id} at {size[0]}x{size[1]}: carried {shape} float32 = {4 * int(np.prod(shape))} bytes, "
          f"{len(record)} bytes in Redis (session state)")
    print(f"{'sessions':>8} {'get_many ms':>12} {'N gets ms':>10} {'ratio':>6} "
          f"{'put_many ms':>12} {'N puts ms':>10} {'ratio':>6}")
    for n, row in timings.items():
        print(f"{n:>8} {row['get_many']:>12.3f} {row['n_gets']:>10.3f} {row['n_gets'] / row['get_many']:>6.2f} "
              f"{row['put_many']:>12.3f} {row['n_puts']:>10.3f} {row['n_puts'] / row['put_many']:>6.2f}")
    print(summary("state", args, {"model": model_id, "input_size": list(size), "state_shape": list(shape),
                                  "state_bytes": 4 * int(np.prod(shape)), "record_bytes": len(record), "round_trip_ms": timings,
                                  "statistic": f"median of {args.runs} runs"}, argv))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
