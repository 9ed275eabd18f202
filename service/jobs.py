"""Clip jobs: a FIFO queue, status records, inputs and results in Redis (or this process), with TTLs.

An upload is staged in the spool folder and copied into the job store, so whichever replica's
worker claims the job can read it. A worker processes one clip at a time, in order, with the
temporal state carried from chunk to chunk (through the engine, so the one model thread is
shared with live streams), writes a zip of 8-bit PNG masks and stores it; mp4 and npz are
derived from the zip on first request and stored too (`service.job_results`). Any replica can
answer status and results. A job that fails part-way keeps the masks it made: its zip is stored
with the frames done, and the status says failed.

Cancel (`DELETE /v1/jobs/{id}`, `JobStore.delete`) removes the job and its blobs at once; the
worker running it finds its record gone at its next chunk (`save` returns False) and stops.

Leases keep jobs from running forever: claiming a job sets `<prefix>:job:<id>:lease` with a short
TTL that the worker's heartbeat renews. Every replica's reaper looks at the running list; a job
whose lease has lapsed (its worker died) goes back to the front of the queue, or is failed once
it has used `job_max_attempts`. A worker that finds its lease taken over stops quietly.

Shutdown (`close`) gives running jobs back at once: queued again at the front, the interrupted
attempt not counted, so another replica (or this one after a restart) starts them without waiting
for the lease to lapse. A store that fails mid-job leaves the job to its lease and the reaper, never
marks it failed; workers and the reaper back off while the store is unreachable.

The Redis key layout is in `service.job_store_redis`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import shutil
import tempfile
import uuid
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
from redis.asyncio import Redis
from redis.exceptions import RedisError

from .engine import Engine
from .job_results import Results
from .job_store import JobRecord, JobStore, Quota
from .job_store_memory import MemoryJobStore
from .job_store_redis import RedisJobStore
from .limits import LimitExceeded
from .metrics import Metrics
from .settings import Settings
from .video import VideoError, encode_png, open_video

log = logging.getLogger("vsod.jobs")
STORE_ERRORS = (RedisError, ConnectionError, TimeoutError)  # the job store is unreachable (not the job's fault)
MAX_BACKOFF_S = 5.0
REQUEUE_TIMEOUT_S = 5.0


class JobLost(RuntimeError):
    """This worker's lease was taken over (it stalled past the lease); another worker owns the job."""


class JobCancelled(RuntimeError):
    """The job was deleted (DELETE /v1/jobs/{id}) while it ran."""


def job_store_for(settings: Settings, redis: Redis | None, spool: Path) -> JobStore:
    """The job store the settings ask for: Redis (shared by replicas) or this process (blobs in `spool`)."""
    quota = Quota.from_settings(settings)
    if redis is not None:
        return RedisJobStore(redis, settings.redis_prefix, settings.job_ttl_s, settings.redis_timeout_s, quota)
    return MemoryJobStore(settings.job_ttl_s, spool / "blobs", quota)


# ---------------------------------------------------------------- the worker


class JobRunner:
    """Claims queued clips one at a time and runs them; also reaps jobs of dead workers."""

    def __init__(self, store: JobStore, engine: Engine, spool: Path, *, workers: int = 1, chunk: int = 8,
                 lease_s: float = 30, max_attempts: int = 2, metrics: Metrics | None = None, poll_s: float = 0.25,
                 max_frames: int | None = None, max_side: int | None = None) -> None:
        self.store, self.engine, self.spool = store, engine, spool
        self.workers, self.chunk, self.lease_s, self.max_attempts = workers, chunk, lease_s, max_attempts
        self.metrics, self.poll_s = metrics or engine.metrics, poll_s
        # Checked again while decoding: a container's header may understate its frames or their size.
        self.max_frames, self.max_side = max_frames, max_side
        self.worker_id = f"{uuid.uuid4().hex[:12]}"
        self.results = Results(store, spool)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.spool.mkdir(parents=True, exist_ok=True)
        self._tasks = [asyncio.create_task(self._reaper(), name="vsod-job-reaper")]
        self._tasks += [asyncio.create_task(self._work(f"{self.worker_id}-{n}"), name=f"vsod-job-{n}")
                        for n in range(self.workers)]

    async def close(self) -> None:
        """Stop claiming; running jobs are given back to the queue (see the module docstring)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def result(self, record: JobRecord, fmt: str) -> tuple[int, AsyncIterator[bytes]] | None:
        """(size, parts) of the job's result in `fmt`, built on first ask; None when it has expired."""
        return await self.results.open(record, fmt)

    async def delete(self, record: JobRecord) -> None:
        """Cancel the job: removed with its blobs at once; its worker stops at its next chunk."""
        await self.store.delete(record)
        self.metrics.jobs.labels("cancelled").inc()

    async def _reaper(self) -> None:
        pause = max(0.2, self.lease_s / 3)
        failures = 0
        while True:
            try:
                for job_id in await self.store.reap(self.max_attempts):
                    log.warning("job %s: its worker's lease lapsed; requeued or failed", job_id)
                failures = _store_back("job reaper", failures)
            except STORE_ERRORS as error:  # the store may be briefly unreachable; try again later
                failures = _store_down("job reaper", error, failures)
            except Exception:
                log.exception("job reaper")
            await asyncio.sleep(pause if not failures else min(MAX_BACKOFF_S, pause * 2**failures))

    async def _work(self, worker: str) -> None:
        failures = 0
        while True:
            try:
                job_id = await self.store.claim(worker, self.lease_s)
                failures = _store_back("claiming a job", failures)
            except STORE_ERRORS as error:
                failures = _store_down("claiming a job", error, failures)
                job_id = None
            except Exception:
                log.exception("claiming a job")
                job_id = None
            if job_id is None:
                await asyncio.sleep(self.poll_s if not failures else min(MAX_BACKOFF_S, self.poll_s * 2**failures))
                continue
            try:
                await self._run(job_id, worker)
            except asyncio.CancelledError:
                raise
            except Exception:  # e.g. the store went away mid-job: the lease lapses, the reaper requeues
                log.exception("job %s", job_id)

    async def _run(self, job_id: str, worker: str) -> None:
        record = await self.store.get(job_id)
        if record is None or not record.active:  # expired or deleted while queued, or a stale duplicate
            await self.store.release(job_id)
            return
        lost = asyncio.Event()
        heartbeat = asyncio.create_task(self._heartbeat(job_id, worker, lost))
        workdir = Path(tempfile.mkdtemp(prefix=f"job-{job_id}-", dir=self.spool))
        try:
            record.status, record.attempts, record.error = "running", record.attempts + 1, None
            record.model_id = self.engine.model_id
            await self._save(record)
            await self._process(record, workdir, lost)
            record.status = "done"
            self.metrics.jobs.labels("done").inc()
        except JobLost:
            log.warning("job %s: lease lost to another worker; stopping", job_id)
            return
        except JobCancelled:
            log.info("job %s: deleted while running; stopped after %d frames", job_id, record.frames_done)
            await self.store.release(job_id)
            return
        except asyncio.CancelledError:  # shutdown: give the job back now rather than when its lease lapses
            await self._give_back(record)
            raise
        except STORE_ERRORS as error:  # not the job's fault: its lease lapses and a reaper requeues it
            log.warning("job %s: the job store failed (%s); it will be requeued", job_id, error)
            return
        except (VideoError, LimitExceeded) as error:
            record.status, record.error = "failed", str(error)
            self.metrics.jobs.labels("failed").inc()
            await self._keep_partial(record, workdir)
        except Exception as error:
            log.exception("job %s failed", job_id)
            # The type only: a message may name server paths.
            record.status, record.error = "failed", f"internal error ({type(error).__name__})"
            self.metrics.jobs.labels("failed").inc()
            await self._keep_partial(record, workdir)
        finally:
            heartbeat.cancel()
            shutil.rmtree(workdir, ignore_errors=True)
        if not await self.store.save(record):  # deleted as it finished: leave nothing behind
            await self.store.delete(record)
        await self.store.release(job_id)

    async def _save(self, record: JobRecord) -> None:
        if not await self.store.save(record):
            raise JobCancelled(record.job_id)

    async def _keep_partial(self, record: JobRecord, workdir: Path) -> None:
        """A failed job's masks so far stay fetchable (its status says failed, with frames_done)."""
        partial = workdir / "masks.zip"
        if record.frames_done and partial.exists():
            try:
                await self.store.put_blob(record.job_id, "result:zip", partial)
            except STORE_ERRORS as error:
                log.warning("job %s: could not keep its partial masks (%s)", record.job_id, error)

    async def _give_back(self, record: JobRecord) -> None:
        try:
            await asyncio.wait_for(self.store.requeue(record), REQUEUE_TIMEOUT_S)
            log.info("job %s: given back to the queue at shutdown", record.job_id)
        except Exception as error:  # noqa: BLE001 - e.g. Redis down too: the lease lapses and a reaper requeues it
            log.warning("job %s: could not requeue at shutdown (%s); its lease will lapse", record.job_id, error)

    async def _heartbeat(self, job_id: str, worker: str, lost: asyncio.Event) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                if not await self.store.heartbeat(job_id, worker, self.lease_s):
                    lost.set()
                    return
            except Exception as error:  # noqa: BLE001 - a missed heartbeat is retried at the next; the lease outlasts a few
                log.warning("job %s heartbeat failed: %s", job_id, error)

    async def _process(self, record: JobRecord, workdir: Path, lost: asyncio.Event) -> None:
        path = workdir / "input"  # no suffix: the container is probed from the content (service.video)
        record.frames_done = 0
        if not await self.store.blob_to_file(record.job_id, "input", path):
            raise VideoError("the upload expired before the job ran")
        source = await asyncio.to_thread(open_video, path, record.filename)
        result = workdir / "masks.zip"
        try:
            info = source.info
            record.fps, record.frames_total = info.fps, info.frame_count
            record.height, record.width = info.size
            await self._save(record)
            frames = source.frames()
            previous: Any = None
            with zipfile.ZipFile(result, "w", zipfile.ZIP_STORED) as archive:  # PNGs are compressed already
                while chunk := await asyncio.to_thread(lambda: [f for _, f in itertools.islice(frames, self.chunk)]):
                    self._check_limits(record.frames_done, chunk)
                    masks, previous = await self.engine.clip_chunk(chunk, previous)
                    await asyncio.to_thread(_write_pngs, archive, record.frames_done, masks)
                    record.frames_done += len(masks)
                    if lost.is_set():  # the lease went: deleted (cancelled), or taken over after a stall
                        gone = await self.store.get(record.job_id) is None
                        raise (JobCancelled if gone else JobLost)(record.job_id)
                    await self._save(record)
        finally:
            await asyncio.to_thread(source.close)
        record.frames_total = record.frames_done
        await self.store.put_blob(record.job_id, "result:zip", result)

    def _check_limits(self, done: int, chunk: list[np.ndarray]) -> None:
        if self.max_frames is not None and done + len(chunk) > self.max_frames:
            raise LimitExceeded(f"the video has more than {self.max_frames} frames, the limit", "clip_too_long")
        if self.max_side is not None and (side := max(max(f.shape[:2]) for f in chunk)) > self.max_side:
            raise LimitExceeded(f"a frame of the video is {side} pixels a side; the limit is {self.max_side}")


def _store_down(what: str, error: Exception, failures: int) -> int:
    """Log a store outage once (not a traceback every poll); returns the new failure count."""
    if failures == 0:
        log.warning("%s: the job store is unreachable (%s); backing off", what, error)
    return failures + 1


def _store_back(what: str, failures: int) -> int:
    if failures:
        log.warning("%s: the job store is reachable again", what)
    return 0


def _write_pngs(archive: zipfile.ZipFile, start: int, masks: list[np.ndarray]) -> None:
    for index, mask in enumerate(masks, start=start):
        archive.writestr(f"{index:05d}.png", encode_png(mask))
