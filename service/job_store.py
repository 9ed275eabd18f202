"""Where clip jobs live: records, inputs, results, the queue, worker leases and quotas.

Two backends offer the same primitives with the same TTL semantics: `service.job_store_memory`
(records in this process, blobs as files in the spool folder) and `service.job_store_redis`
(everything in Redis, shared by replicas). `JobStore.reap` builds the dead-worker recovery on top
of them. See `service.jobs` for the worker and the key layout.

Blobs (the upload, the result in each format) are written and read a part at a time (`PART`
bytes), so no blob is ever held whole in memory, whatever the clip's length.

Quotas: `admit` counts an owner's (API key's) queued plus running jobs and the bytes their blobs
hold, and the same over every owner, and refuses a new job over a `Quota` limit with
`QuotaExceeded`; when it admits the job it reserves the upload's bytes in the same step, so two
uploads racing for the last slot cannot both get it.

Cancel: `delete` removes a job's record, blobs and queue entries at once. A running job's worker
learns of it at its next chunk, because `save` only updates a record that still exists.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from .settings import Settings

Status = Literal["queued", "running", "done", "failed"]
PART = 4 * 1024 * 1024  # blobs move in parts: no single command or buffer carries a whole clip
RETRY_BUSY_S = 10  # Retry-After when the job slots are full: about a short clip's run on a small CPU


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

    @property
    def active(self) -> bool:
        return self.status in ("queued", "running")


def new_job_id() -> str:
    return uuid.uuid4().hex  # 122 random bits: not guessable


@dataclass(frozen=True)
class Quota:
    """Limits on what clip jobs may hold: per owner (API key) and over all owners together."""

    jobs_per_key: int
    bytes_per_key: int
    jobs: int
    bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Quota:
        return cls(settings.max_jobs_per_key, settings.max_job_bytes_per_key, settings.max_jobs, settings.max_job_bytes)


UNLIMITED = Quota(2**62, 2**62, 2**62, 2**62)


class QuotaExceeded(Exception):
    """A new job would go over a quota: HTTP 429 with `retry_after_s` as Retry-After."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def quota_problem(limit: str, quota: Quota, held: int, size: int, wait_ms: int) -> QuotaExceeded:
    """The one wording of each quota refusal; `wait_ms` is when the soonest finished job expires (-1: none)."""
    later = max(1, math.ceil(wait_ms / 1000)) if wait_ms > 0 else RETRY_BUSY_S
    if limit in ("jobs_per_key", "jobs"):
        whose, most = ("this API key has", quota.jobs_per_key) if limit == "jobs_per_key" else ("the server has", quota.jobs)
        return QuotaExceeded(f"{whose} {held} clip jobs queued or running, the most allowed ({most}); "
                             f"try again when one has finished", RETRY_BUSY_S)
    whose, most = ("this API key's", quota.bytes_per_key) if limit == "bytes_per_key" else ("all", quota.bytes)
    return QuotaExceeded(f"{whose} clip jobs hold {held} bytes; this upload of {size} bytes would pass the limit of "
                         f"{most}; delete finished jobs (DELETE /v1/jobs/{{id}}) or try again later", later)


class JobStore:
    """Backend-neutral job logic on top of a few primitives each backend provides."""

    backend: str

    def __init__(self, ttl_s: float, quota: Quota = UNLIMITED) -> None:
        self.ttl_s, self.quota = ttl_s, quota

    def close(self) -> None:
        """Release what only this process holds (the in-memory store's blob folder); Redis keeps its jobs."""

    async def create(self, record: JobRecord, upload: Path) -> None:
        """Admit the job (QuotaExceeded when over a quota), store its upload and queue it."""
        await self.admit(record)
        try:
            await self.put_blob(record.job_id, "input", upload)
        except BaseException:
            await self.delete(record)
            raise
        await self.enqueue(record.job_id)

    async def requeue(self, record: JobRecord) -> None:
        """Give a running job back (this worker is shutting down): first in line again, and the
        interrupted attempt does not count towards `job_max_attempts`, which is for dying workers."""
        record.status, record.frames_done, record.attempts = "queued", 0, max(0, record.attempts - 1)
        if await self.save(record):
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
            if record is None or not record.active:
                continue
            if record.attempts >= max_attempts:
                record.status = "failed"
                record.error = f"its worker died on each of {record.attempts} attempts"
                await self.save(record)
                await self.delete_blob(job_id, "input")
            else:
                record.status, record.frames_done = "queued", 0
                if await self.save(record):
                    await self.enqueue(job_id, front=True)
        return acted

    # -- primitives ------------------------------------------------------------------------------
    async def get(self, job_id: str) -> JobRecord | None: raise NotImplementedError
    async def save(self, record: JobRecord) -> bool:
        """Update an existing record; False (and nothing written) when it was deleted or expired."""
        raise NotImplementedError
    async def admit(self, record: JobRecord) -> None:
        """Check the quotas, then write the new record and reserve `record.size` bytes for its upload."""
        raise NotImplementedError
    async def delete(self, record: JobRecord) -> None:
        """Remove the job at once: record, blobs, lease, queue and running entries."""
        raise NotImplementedError
    async def enqueue(self, job_id: str, front: bool = False) -> None: raise NotImplementedError
    async def claim(self, worker: str, lease_s: float) -> str | None: raise NotImplementedError
    async def heartbeat(self, job_id: str, worker: str, lease_s: float) -> bool: raise NotImplementedError
    async def release(self, job_id: str) -> None: raise NotImplementedError
    async def give_back(self, job_id: str) -> None: raise NotImplementedError
    async def running_ids(self) -> list[str]: raise NotImplementedError
    async def has_lease(self, job_id: str) -> bool: raise NotImplementedError
    async def remove_running(self, job_id: str) -> bool: raise NotImplementedError
    async def put_blob(self, job_id: str, kind: str, source: Path | bytes) -> None:
        """Store a blob, reading a file a part at a time; it appears whole or not at all."""
        raise NotImplementedError
    async def blob_size(self, job_id: str, kind: str) -> int | None: raise NotImplementedError
    def blob_parts(self, job_id: str, kind: str) -> AsyncIterator[bytes]:
        """The blob's bytes, a part at a time (nothing when it does not exist)."""
        raise NotImplementedError
    async def delete_blob(self, job_id: str, kind: str) -> None: raise NotImplementedError
    async def lock(self, name: str, ttl_s: float) -> bool:
        """Take a named lock shared by every replica (False: someone holds it); it lapses after `ttl_s`."""
        raise NotImplementedError
    async def renew_lock(self, name: str, ttl_s: float) -> None: raise NotImplementedError
    async def unlock(self, name: str) -> None: raise NotImplementedError
    async def queue_length(self) -> int: raise NotImplementedError
    async def ping(self) -> None: return None

    async def blob_to_file(self, job_id: str, kind: str, path: Path) -> bool:
        """Copy a blob into a local file a part at a time; False when it does not exist."""
        found = False
        with path.open("wb") as out:
            async for part in self.blob_parts(job_id, kind):
                found = True
                await asyncio.to_thread(out.write, part)
        return found


async def file_parts(source: Path | bytes) -> AsyncIterator[bytes]:
    """A file's (or bytes') content in `PART`-sized pieces, read off the event loop; one b"" when empty."""
    if isinstance(source, bytes):
        for start in range(0, max(1, len(source)), PART):
            yield source[start : start + PART]
        return
    with source.open("rb") as handle:
        first = True
        while (part := await asyncio.to_thread(handle.read, PART)) or first:
            first = False
            yield part
            if not part:
                return
