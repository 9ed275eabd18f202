"""Where clip jobs live: records, inputs, results, the queue and worker leases (Redis or memory).

Both backends offer the same primitives with the same TTL semantics; `JobStore.reap` builds the
dead-worker recovery on top of them. See `service.jobs` for the worker and the key layout.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from redis.asyncio import Redis

Status = Literal["queued", "running", "done", "failed"]
PART = 4 * 1024 * 1024  # blobs go to Redis in parts, so no single command carries a huge value


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
    owner: str = ""  # service.auth.owner_id of the API key that uploaded it ("" without keys)
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

    async def requeue(self, record: JobRecord) -> None:
        """Give a running job back (this worker is shutting down): first in line again, and the
        interrupted attempt does not count towards `job_max_attempts`, which is for dying workers."""
        record.status, record.frames_done, record.attempts = "queued", 0, max(0, record.attempts - 1)
        await self.save(record)
        await self.give_back(record.job_id)

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
    async def give_back(self, job_id: str) -> None: raise NotImplementedError
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

    async def give_back(self, job_id: str) -> None:
        async with self.client.pipeline(transaction=True) as pipe:  # one step: never both or neither listed
            pipe.lrem(self.running_key, 0, job_id)
            pipe.delete(self.key(job_id, "lease"))
            pipe.rpush(self.queue_key, job_id)  # the front of the line (workers pop from the right)
            pipe.pexpire(self.queue_key, self._ttl_ms)
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

    async def give_back(self, job_id: str) -> None:
        await self.remove_running(job_id)
        self._leases.pop(job_id, None)
        self._queue.appendleft(job_id)

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
