"""The embedded job store: what `service.job_store.JobStore` defines, for one process without Redis.

Records, the queue, leases and locks live in dicts, with expiry times instead of key TTLs; blobs are
files in a folder of their own under the spool, so a result never sits in memory and a killed
process's blobs go with its spool (`service.spool`).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path

from .job_store import PART, UNLIMITED, JobRecord, JobStore, Quota, file_parts, quota_problem


class MemoryJobStore(JobStore):
    """The embedded default: records, queue and leases in dicts (with expiry times instead of key
    TTLs), blobs as files under `blob_dir` (the spool folder), so a result never sits in memory."""

    backend = "memory"

    def __init__(self, ttl_s: float = 3600, blob_dir: Path | None = None, quota: Quota = UNLIMITED) -> None:
        super().__init__(ttl_s, quota)
        # A folder of its own, inside `blob_dir` (the spool) when given: the blobs of an earlier process,
        # whose records died with it, are never mistaken for this one's.
        if blob_dir is not None:
            blob_dir.mkdir(parents=True, exist_ok=True)
        self.blob_dir = Path(tempfile.mkdtemp(prefix="vsod-blobs-", dir=blob_dir))
        self._records: dict[str, tuple[float, str]] = {}
        self._blobs: dict[tuple[str, str], tuple[float, Path, int]] = {}
        self._leases: dict[str, tuple[float, str]] = {}
        self._locks: dict[str, float] = {}
        self._queue: deque[str] = deque()
        self._running: list[str] = []

    def close(self) -> None:
        shutil.rmtree(self.blob_dir, ignore_errors=True)

    def _sweep(self) -> None:
        now = time.monotonic()
        for table in (self._records, self._leases):
            for key in [k for k, (expires, _) in table.items() if expires <= now]:
                del table[key]  # type: ignore[attr-defined]
        for blob in [k for k, (expires, *_) in self._blobs.items() if expires <= now]:
            self._drop_blob(blob)

    def _drop_blob(self, key: tuple[str, str]) -> None:
        entry = self._blobs.pop(key, None)
        if entry is not None:
            entry[1].unlink(missing_ok=True)

    async def get(self, job_id: str) -> JobRecord | None:
        self._sweep()
        entry = self._records.get(job_id)
        return JobRecord.from_json(entry[1]) if entry else None

    def _write(self, record: JobRecord) -> None:
        record.updated = time.time()
        self._records[record.job_id] = (time.monotonic() + self.ttl_s, record.to_json())

    async def save(self, record: JobRecord) -> bool:
        self._sweep()
        if record.job_id not in self._records:
            return False
        self._write(record)
        return True

    def _tally(self, owner: str | None) -> tuple[int, int, int]:
        """(active jobs, bytes held, ms until the soonest finished job holding bytes expires or -1)."""
        jobs = held = 0
        wait = -1.0
        now = time.monotonic()
        for job_id, (expires, data) in self._records.items():
            record = JobRecord.from_json(data)
            if owner is not None and record.owner != owner:
                continue
            size = sum(entry[2] for (blob_job, _), entry in self._blobs.items() if blob_job == job_id)
            held += size
            if record.active:
                jobs += 1
            elif size and (wait < 0 or (expires - now) * 1000 < wait):
                wait = (expires - now) * 1000
        return jobs, held, int(wait)

    async def admit(self, record: JobRecord) -> None:
        self._sweep()
        for scope, jobs_limit, bytes_limit in (("per_key", self.quota.jobs_per_key, self.quota.bytes_per_key),
                                               ("", self.quota.jobs, self.quota.bytes)):
            jobs, held, wait = self._tally(record.owner if scope else None)
            suffix = f"_{scope}" if scope else ""
            if jobs + 1 > jobs_limit:
                raise quota_problem(f"jobs{suffix}", self.quota, jobs, record.size, wait)
            if held + record.size > bytes_limit:
                raise quota_problem(f"bytes{suffix}", self.quota, held, record.size, wait)
        self._write(record)
        # The upload's bytes count from now on, before they are written.
        self._blobs[(record.job_id, "input")] = (time.monotonic() + self.ttl_s, self.blob_dir / f"{record.job_id}.input",
                                                 record.size)

    async def delete(self, record: JobRecord) -> None:
        job_id = record.job_id
        self._records.pop(job_id, None)
        self._leases.pop(job_id, None)
        for key in [k for k in self._blobs if k[0] == job_id]:
            self._drop_blob(key)
        if job_id in self._queue:
            self._queue.remove(job_id)
        await self.remove_running(job_id)

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
        self._drop_blob((job_id, "input"))

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
        path = self.blob_dir / f"{job_id}.{kind.replace(':', '-')}"
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
        size = 0
        try:
            with partial.open("wb") as out:
                async for part in file_parts(source):
                    await asyncio.to_thread(out.write, part)
                    size += len(part)
            partial.replace(path)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        self._blobs[(job_id, kind)] = (time.monotonic() + self.ttl_s, path, size)

    async def blob_size(self, job_id: str, kind: str) -> int | None:
        self._sweep()
        entry = self._blobs.get((job_id, kind))
        return entry[2] if entry and entry[1].exists() else None

    async def blob_parts(self, job_id: str, kind: str) -> AsyncIterator[bytes]:
        self._sweep()
        entry = self._blobs.get((job_id, kind))
        if entry is None:
            return
        try:
            handle = entry[1].open("rb")  # an open file survives its deletion: a read in flight completes
        except FileNotFoundError:
            return
        with handle:
            while part := await asyncio.to_thread(handle.read, PART):
                yield part

    async def delete_blob(self, job_id: str, kind: str) -> None:
        self._drop_blob((job_id, kind))

    async def lock(self, name: str, ttl_s: float) -> bool:
        now = time.monotonic()
        if self._locks.get(name, 0) > now:
            return False
        self._locks[name] = now + ttl_s
        return True

    async def renew_lock(self, name: str, ttl_s: float) -> None:
        if name in self._locks:
            self._locks[name] = time.monotonic() + ttl_s

    async def unlock(self, name: str) -> None:
        self._locks.pop(name, None)

    async def queue_length(self) -> int:
        return len(self._queue)
