"""Clip jobs: a FIFO queue, status records, inputs and results in Redis (or this process), with TTLs.

An upload is staged in the spool folder and copied into the job store, so whichever replica's
worker claims the job can read it. A worker processes one clip at a time, in order, with the
temporal state carried from chunk to chunk (through the engine, so the one model thread is
shared with live streams), writes a zip of 8-bit PNG masks and stores it; mp4 and npz are
derived from the zip on first request and stored too. Any replica can answer status and results.

Leases keep jobs from running forever: claiming a job sets `<prefix>:job:<id>:lease` with a short
TTL that the worker's heartbeat renews. Every replica's reaper looks at the running list; a job
whose lease has lapsed (its worker died) goes back to the front of the queue, or is failed once
it has used `job_max_attempts`. A worker that finds its lease taken over stops quietly.

Redis keys: `<p>:job:<id>` (JSON record), `<p>:job:<id>:input`, `<p>:job:<id>:result:<fmt>` (lists
of byte parts), `<p>:job:<id>:lease`, and the lists `<p>:jobs:queue` and `<p>:jobs:running`.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import logging
import shutil
import tempfile
import time
import uuid
import zipfile
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from redis.asyncio import Redis

from .engine import Engine
from .metrics import Metrics
from .video import MaskVideoWriter, VideoError, encode_png, open_media

log = logging.getLogger("vsod.jobs")
Status = Literal["queued", "running", "done", "failed"]
FORMATS = ("zip", "mp4", "npz")
PART = 4 * 1024 * 1024  # blobs go to Redis in parts, so no single command carries a huge value


class JobLost(RuntimeError):
    """This worker's lease was taken over (it stalled past the lease); another worker owns the job."""


@dataclass
class JobRecord:
    job_id: str
    filename: str
    size: int
    status: Status = "queued"
    frames_done: int = 0
    frames_total: int | None = None  # from the container until the job is done, exact after
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    attempts: int = 0
    error: str | None = None
    model_id: str | None = None
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, data: str | bytes) -> JobRecord:
        return cls(**json.loads(data))


def new_job_id() -> str:
    return uuid.uuid4().hex  # 122 random bits: not guessable


class JobStore:
    """Backend-neutral job logic on top of a few primitives each backend provides."""

    backend: str

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s

    async def create(self, record: JobRecord, upload: Path) -> None:
        await self.put_blob(record.job_id, "input", upload)
        await self.save(record)
        await self.enqueue(record.job_id)

    async def reap(self, max_attempts: int) -> list[str]:
        """Requeue or fail running jobs whose worker's lease lapsed; returns the ids it acted on."""
        acted = []
        for job_id in await self.running_ids():
            if await self.has_lease(job_id):
                continue
            record = await self.get(job_id)
            if not await self.remove_running(job_id):
                continue  # another replica's reaper (or the finishing worker) got there first
            acted.append(job_id)
            if record is None or record.status in ("done", "failed"):
                continue
            if record.attempts >= max_attempts:
                record.status = "failed"
                record.error = f"its worker died on each of {record.attempts} attempts"
                await self.save(record)
                await self.delete_blob(job_id, "input")
            else:
                record.status, record.frames_done = "queued", 0
                await self.save(record)
                await self.enqueue(job_id, front=True)
        return acted

    # -- primitives ------------------------------------------------------------------------------
    async def get(self, job_id: str) -> JobRecord | None: raise NotImplementedError
    async def save(self, record: JobRecord) -> None: raise NotImplementedError
    async def enqueue(self, job_id: str, front: bool = False) -> None: raise NotImplementedError
    async def claim(self, worker: str, lease_s: float) -> str | None: raise NotImplementedError
    async def heartbeat(self, job_id: str, worker: str, lease_s: float) -> bool: raise NotImplementedError
    async def release(self, job_id: str) -> None: raise NotImplementedError
    async def running_ids(self) -> list[str]: raise NotImplementedError
    async def has_lease(self, job_id: str) -> bool: raise NotImplementedError
    async def remove_running(self, job_id: str) -> bool: raise NotImplementedError
    async def put_blob(self, job_id: str, kind: str, source: Path | bytes) -> None: raise NotImplementedError
    async def get_blob(self, job_id: str, kind: str) -> bytes | None: raise NotImplementedError
    async def delete_blob(self, job_id: str, kind: str) -> None: raise NotImplementedError
    async def queue_length(self) -> int: raise NotImplementedError
    async def ping(self) -> None: return None


def _parts(source: Path | bytes) -> list[bytes]:
    data = source.read_bytes() if isinstance(source, Path) else source
    return [data[i : i + PART] for i in range(0, len(data), PART)] or [b""]


_CLAIM = """
local id = redis.call('RPOPLPUSH', KEYS[1], KEYS[2])
if not id then return false end
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('SET', ARGV[1] .. id .. ':lease', ARGV[2], 'PX', ARGV[3])
return id
"""
_HEARTBEAT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class RedisJobStore(JobStore):
    backend = "redis"

    def __init__(self, client: Redis, prefix: str = "vsod", ttl_s: float = 3600) -> None:
        super().__init__(ttl_s)
        self.client, self.prefix = client, prefix
        self.queue_key, self.running_key = f"{prefix}:jobs:queue", f"{prefix}:jobs:running"
        self._claim = client.register_script(_CLAIM)
        self._heartbeat = client.register_script(_HEARTBEAT)

    def key(self, job_id: str, *suffix: str) -> str:
        return ":".join((self.prefix, "job", job_id, *suffix))

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl_s * 1000))

    async def get(self, job_id: str) -> JobRecord | None:
        data = await self.client.get(self.key(job_id))
        return JobRecord.from_json(data) if data is not None else None

    async def save(self, record: JobRecord) -> None:
        record.updated = time.time()
        await self.client.set(self.key(record.job_id), record.to_json(), px=self._ttl_ms)

    async def enqueue(self, job_id: str, front: bool = False) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            # Workers pop from the right: LPUSH is the back of the line, RPUSH the front.
            (pipe.rpush if front else pipe.lpush)(self.queue_key, job_id)
            pipe.pexpire(self.queue_key, self._ttl_ms)  # an idle queue's jobs have all expired anyway
            await pipe.execute()

    async def claim(self, worker: str, lease_s: float) -> str | None:
        args = [f"{self.prefix}:job:", worker, max(1, int(lease_s * 1000)), self._ttl_ms]
        job_id = await self._claim(keys=[self.queue_key, self.running_key], args=args)
        return job_id.decode() if isinstance(job_id, bytes) else job_id

    async def heartbeat(self, job_id: str, worker: str, lease_s: float) -> bool:
        return bool(await self._heartbeat(keys=[self.key(job_id, "lease")], args=[worker, max(1, int(lease_s * 1000))]))

    async def release(self, job_id: str) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.lrem(self.running_key, 0, job_id)
            pipe.delete(self.key(job_id, "lease"), self.key(job_id, "input"))
            await pipe.execute()

    async def running_ids(self) -> list[str]:
        return [item.decode() for item in await self.client.lrange(self.running_key, 0, -1)]

    async def has_lease(self, job_id: str) -> bool:
        return bool(await self.client.exists(self.key(job_id, "lease")))

    async def remove_running(self, job_id: str) -> bool:
        return bool(await self.client.lrem(self.running_key, 0, job_id))

    async def put_blob(self, job_id: str, kind: str, source: Path | bytes) -> None:
        key = self.key(job_id, kind)
        parts = await asyncio.to_thread(_parts, source)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            for part in parts:
                pipe.rpush(key, part)
            pipe.pexpire(key, self._ttl_ms)
            await pipe.execute()

    async def get_blob(self, job_id: str, kind: str) -> bytes | None:
        parts = await self.client.lrange(self.key(job_id, kind), 0, -1)
        return b"".join(parts) if parts else None

    async def delete_blob(self, job_id: str, kind: str) -> None:
        await self.client.delete(self.key(job_id, kind))

    async def queue_length(self) -> int:
        return int(await self.client.llen(self.queue_key))

    async def ping(self) -> None:
        await self.client.ping()


class MemoryJobStore(JobStore):
    """The embedded default: the same operations on dicts, with expiry times instead of key TTLs."""

    backend = "memory"

    def __init__(self, ttl_s: float = 3600) -> None:
        super().__init__(ttl_s)
        self._records: dict[str, tuple[float, str]] = {}
        self._blobs: dict[tuple[str, str], tuple[float, bytes]] = {}
        self._leases: dict[str, tuple[float, str]] = {}
        self._queue: deque[str] = deque()
        self._running: list[str] = []

    def _sweep(self) -> None:
        now = time.monotonic()
        for table in (self._records, self._blobs, self._leases):
            for key in [k for k, (expires, _) in table.items() if expires <= now]:
                del table[key]  # type: ignore[attr-defined]

    async def get(self, job_id: str) -> JobRecord | None:
        self._sweep()
        entry = self._records.get(job_id)
        return JobRecord.from_json(entry[1]) if entry else None

    async def save(self, record: JobRecord) -> None:
        record.updated = time.time()
        self._records[record.job_id] = (time.monotonic() + self.ttl_s, record.to_json())

    async def enqueue(self, job_id: str, front: bool = False) -> None:
        (self._queue.appendleft if front else self._queue.append)(job_id)

    async def claim(self, worker: str, lease_s: float) -> str | None:
        if not self._queue:
            return None
        job_id = self._queue.popleft()
        self._running.append(job_id)
        self._leases[job_id] = (time.monotonic() + lease_s, worker)
        return job_id

    async def heartbeat(self, job_id: str, worker: str, lease_s: float) -> bool:
        self._sweep()
        if self._leases.get(job_id, (0, None))[1] != worker:
            return False
        self._leases[job_id] = (time.monotonic() + lease_s, worker)
        return True

    async def release(self, job_id: str) -> None:
        await self.remove_running(job_id)
        self._leases.pop(job_id, None)
        self._blobs.pop((job_id, "input"), None)

    async def running_ids(self) -> list[str]:
        return list(self._running)

    async def has_lease(self, job_id: str) -> bool:
        self._sweep()
        return job_id in self._leases

    async def remove_running(self, job_id: str) -> bool:
        if job_id not in self._running:
            return False
        self._running.remove(job_id)
        return True

    async def put_blob(self, job_id: str, kind: str, source: Path | bytes) -> None:
        data = await asyncio.to_thread(source.read_bytes) if isinstance(source, Path) else source
        self._blobs[(job_id, kind)] = (time.monotonic() + self.ttl_s, data)

    async def get_blob(self, job_id: str, kind: str) -> bytes | None:
        self._sweep()
        entry = self._blobs.get((job_id, kind))
        return entry[1] if entry else None

    async def delete_blob(self, job_id: str, kind: str) -> None:
        self._blobs.pop((job_id, kind), None)

    async def queue_length(self) -> int:
        return len(self._queue)


# ---------------------------------------------------------------- results in other formats


def zip_to_masks(data: bytes) -> list[np.ndarray]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = sorted(archive.namelist())
        return [cv2.imdecode(np.frombuffer(archive.read(name), np.uint8), cv2.IMREAD_UNCHANGED) for name in names]


def convert_result(zip_bytes: bytes, fmt: str, fps: float | None, workdir: Path) -> bytes:
    """zip of PNG masks -> npz (`masks`: uint8 T,H,W) or an H.264 mask video."""
    masks = zip_to_masks(zip_bytes)
    if fmt == "npz":
        buffer = io.BytesIO()
        np.savez_compressed(buffer, masks=np.stack(masks) if masks else np.zeros((0, 0, 0), np.uint8))
        return buffer.getvalue()
    if fmt == "mp4":
        path = workdir / f"masks-{uuid.uuid4().hex}.mp4"
        try:
            with MaskVideoWriter(path, fps) as writer:
                for mask in masks:
                    writer.write(mask)
            return path.read_bytes()
        finally:
            path.unlink(missing_ok=True)
    raise ValueError(f"unknown result format {fmt!r}")


# ---------------------------------------------------------------- the worker


class JobRunner:
    """Claims queued clips one at a time and runs them; also reaps jobs of dead workers."""

    def __init__(self, store: JobStore, engine: Engine, spool: Path, *, workers: int = 1, chunk: int = 8,
                 lease_s: float = 30, max_attempts: int = 2, metrics: Metrics | None = None, poll_s: float = 0.25) -> None:
        self.store, self.engine, self.spool = store, engine, spool
        self.workers, self.chunk, self.lease_s, self.max_attempts = workers, chunk, lease_s, max_attempts
        self.metrics, self.poll_s = metrics or engine.metrics, poll_s
        self.worker_id = f"{uuid.uuid4().hex[:12]}"
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.spool.mkdir(parents=True, exist_ok=True)
        self._tasks = [asyncio.create_task(self._reaper(), name="vsod-job-reaper")]
        self._tasks += [asyncio.create_task(self._work(f"{self.worker_id}-{n}"), name=f"vsod-job-{n}")
                        for n in range(self.workers)]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def result(self, record: JobRecord, fmt: str) -> bytes | None:
        """The finished job's result in `fmt`, converting from the zip (and storing it) on first ask."""
        data = await self.store.get_blob(record.job_id, f"result:{fmt}")
        if data is not None or fmt == "zip":
            return data
        zipped = await self.store.get_blob(record.job_id, "result:zip")
        if zipped is None:
            return None
        data = await asyncio.to_thread(convert_result, zipped, fmt, record.fps, self.spool)
        await self.store.put_blob(record.job_id, f"result:{fmt}", data)
        return data

    async def _reaper(self) -> None:
        while True:
            try:
                for job_id in await self.store.reap(self.max_attempts):
                    log.warning("job %s: its worker's lease lapsed; requeued or failed", job_id)
            except Exception:  # the store may be briefly unreachable; try again next round
                log.exception("job reaper")
            await asyncio.sleep(max(0.2, self.lease_s / 3))

    async def _work(self, worker: str) -> None:
        while True:
            try:
                job_id = await self.store.claim(worker, self.lease_s)
            except Exception:
                log.exception("claiming a job")
                job_id = None
            if job_id is None:
                await asyncio.sleep(self.poll_s)
                continue
            try:
                await self._run(job_id, worker)
            except asyncio.CancelledError:
                raise
            except Exception:  # e.g. the store went away mid-job: the lease lapses, the reaper requeues
                log.exception("job %s", job_id)

    async def _run(self, job_id: str, worker: str) -> None:
        record = await self.store.get(job_id)
        if record is None:  # expired while queued
            await self.store.release(job_id)
            return
        lost = asyncio.Event()
        heartbeat = asyncio.create_task(self._heartbeat(job_id, worker, lost))
        workdir = Path(tempfile.mkdtemp(prefix=f"job-{job_id}-", dir=self.spool))
        try:
            record.status, record.attempts, record.error = "running", record.attempts + 1, None
            record.model_id = self.engine.model_id
            await self.store.save(record)
            await self._process(record, workdir, lost)
            record.status = "done"
            self.metrics.jobs.labels("done").inc()
        except JobLost:
            log.warning("job %s: lease lost to another worker; stopping", job_id)
            return
        except asyncio.CancelledError:
            raise  # shutdown: the lease lapses and another worker takes the job over
        except VideoError as error:
            record.status, record.error = "failed", str(error)
            self.metrics.jobs.labels("failed").inc()
        except Exception as error:
            log.exception("job %s failed", job_id)
            record.status, record.error = "failed", f"internal error: {type(error).__name__}: {error}"
            self.metrics.jobs.labels("failed").inc()
        finally:
            heartbeat.cancel()
            shutil.rmtree(workdir, ignore_errors=True)
        await self.store.save(record)
        await self.store.release(job_id)

    async def _heartbeat(self, job_id: str, worker: str, lost: asyncio.Event) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                if not await self.store.heartbeat(job_id, worker, self.lease_s):
                    lost.set()
                    return
            except Exception:
                log.exception("job %s heartbeat", job_id)

    async def _process(self, record: JobRecord, workdir: Path, lost: asyncio.Event) -> None:
        data = await self.store.get_blob(record.job_id, "input")
        if data is None:
            raise VideoError("the upload expired before the job ran")
        suffix = Path(record.filename).suffix.lower() or ".mp4"
        path = workdir / f"input{suffix}"
        record.frames_done = 0
        await asyncio.to_thread(path.write_bytes, data)
        del data
        source = await asyncio.to_thread(open_media, path, lambda message: log.warning("job %s: %s", record.job_id, message))
        try:
            info = source.info
            record.fps, record.frames_total = info.fps, info.frame_count
            record.height, record.width = info.size
            await self.store.save(record)
            frames = source.frames()
            result = workdir / "masks.zip"
            previous: Any = None
            with zipfile.ZipFile(result, "w", zipfile.ZIP_STORED) as archive:  # PNGs are compressed already
                while chunk := await asyncio.to_thread(lambda: [f for _, f in itertools.islice(frames, self.chunk)]):
                    masks, previous = await self.engine.clip_chunk(chunk, previous)
                    await asyncio.to_thread(_write_pngs, archive, record.frames_done, masks)
                    record.frames_done += len(masks)
                    if lost.is_set():
                        raise JobLost(record.job_id)
                    await self.store.save(record)
        finally:
            await asyncio.to_thread(source.close)
        record.frames_total = record.frames_done
        await self.store.put_blob(record.job_id, "result:zip", result)


def _write_pngs(archive: zipfile.ZipFile, start: int, masks: list[np.ndarray]) -> None:
    for index, mask in enumerate(masks, start=start):
        archive.writestr(f"{index:05d}.png", encode_png(mask))
