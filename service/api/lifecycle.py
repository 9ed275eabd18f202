"""A process's life: alive at once, ready when loaded, drained on SIGTERM.

Start-up (`load`, run in the background by the app's lifespan). The server answers from its first
moment: `/healthz` is 200 at once, `/readyz` is 503 `loading: <phase>` until the model is loaded,
optimised and warmed and the stores are connected, and the log says each phase as it begins.
Routes that need the model answer 503 meanwhile (see `app.LoadingGate`). A load that fails is
logged; `/readyz` then says why, and `service.server` stops the process with a non-zero status so
an orchestrator restarts it.

Graceful shutdown (`drain`, run by `service.server.GracefulServer` between SIGTERM and uvicorn's own
shutdown):
1. the replica stops being ready (`/readyz` 503) and refuses new streams (1001), so a load
   balancer moves clients elsewhere;
2. running clip jobs are given back to the queue at once (another replica starts them without
   waiting for a lease to lapse);
3. every open stream takes no more frames, gets its frame in flight answered (its state written
   to the session store), and is closed with 1001 "going away"; the client reconnects with its
   `session_id`, to any replica, and continues where it left off.
Streams that have not finished after `shutdown_timeout_s` are closed with 1001 all the same.

Only then does uvicorn stop: HTTP requests still running complete, and the app's lifespan closes
the engine and the stores. Under plain `uvicorn` (no `GracefulServer`) step 2 still happens in the
lifespan, but uvicorn itself closes WebSockets first, with 1012. A SIGTERM during start-up stops
the process once the step running on the model's thread (loading, tracing, warming) returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from redis.asyncio import Redis

from ..auth import ApiKeys
from ..engine import Engine, inference_executor
from ..job_store import JobStore
from ..jobs import JobRunner, job_store_for
from ..live import LiveSessions, MemorySessionStore, RedisSessionStore, SessionStore
from ..messages import USER_ERRORS, first_line
from ..metrics import Metrics
from ..model import ModelStore, Predictor
from ..process import LOADING
from ..settings import Settings
from ..spool import open_spool
from .deps import Services
from .routes.stream import GOING_AWAY

log = logging.getLogger("vsod")
shutdown_log = logging.getLogger("vsod.shutdown")


@dataclass
class Startup:
    """Where a process is in its start; `services` is set once it is ready, `error` if it never will be."""

    phase: str = "starting"
    services: Services | None = None
    error: str | None = None
    began: float = field(default_factory=time.monotonic)

    def enter(self, phase: str) -> None:
        """Begin a phase (called from the loop or the model's thread): shown by /readyz and logged."""
        self.phase = phase
        log.info("%s: %s (%.1f s since the app began loading)", LOADING, phase, time.monotonic() - self.began)

    @property
    def not_ready(self) -> str | None:
        """Why /readyz is 503 during start-up, or None once started."""
        if self.error is not None:  # the error itself may name server paths: it goes to the log only
            return f"failed to start while {self.phase}; see the server log"
        return None if self.services is not None else f"{LOADING}: {self.phase}"


def _device(setting: str) -> str | None:
    return None if setting == "auto" else setting


def _load(settings: Settings, store: ModelStore, startup: Startup) -> Predictor:
    """Load and optimise the model on the thread that will run it."""
    if settings.threads:  # a per-thread OpenMP setting: made on the thread that runs the model
        torch.set_num_threads(settings.threads)
    startup.enter(f"loading model {settings.model} (backend {settings.backend})")
    predictor = Predictor.from_store(settings.model, store, _device(settings.device), settings.backend, settings.threads)
    # A still image takes the eager path: its first-call costs are paid here, not by the first client.
    predictor.predict_image(np.zeros((32, 32, 3), np.uint8))
    return predictor


async def start_services(settings: Settings, metrics: Metrics, startup: Startup) -> Services:
    started = time.monotonic()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    store = ModelStore(settings.model_store)
    # Loaded (and traced) on the engine's own thread, the only one that ever runs the model.
    infer = inference_executor()
    predictor = await asyncio.get_running_loop().run_in_executor(infer, _load, settings, store, startup)
    loaded_s = time.monotonic() - started
    startup.enter("connecting the session and job stores")
    redis: Redis | None = None
    session_store: SessionStore
    job_store: JobStore
    spool = open_spool(settings.spool_dir)  # reaps the temp spools of processes that are gone
    if settings.redis_url:
        redis = Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=10, health_check_interval=30)
        session_store = RedisSessionStore(redis, settings.redis_prefix, settings.session_ttl_s,
                                          timeout_s=settings.redis_timeout_s, retry_s=settings.redis_retry_s)
    else:
        session_store = MemorySessionStore(settings.session_ttl_s)
    job_store = job_store_for(settings, redis, spool)  # with its quotas and Redis timeout
    live = LiveSessions(session_store, predictor.model_id, predictor.input_size, metrics, settings.scaled_jpeg_decode,
                        settings.max_frame_side, settings.max_stream_pixels_per_s)
    engine = Engine(predictor, live, metrics, settings.batch_size, settings.batch_wait_ms, infer)
    startup.enter(f"warming up {predictor.model_id} on {predictor.device} ({predictor.backend}, "
                  f"{torch.get_num_threads()} thread(s), OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}) "
                  f"at batch sizes 1-{settings.batch_size}")
    await engine.start()  # StepRuntime.warmup at every batch size the engine forms, on the model's thread
    startup.enter("starting the job workers")
    runner = JobRunner(job_store, engine, spool, workers=settings.job_workers, chunk=settings.clip_chunk,
                       lease_s=settings.job_lease_s, max_attempts=settings.job_max_attempts, metrics=metrics,
                       max_frames=settings.max_clip_frames, max_side=settings.max_frame_side)
    await runner.start()
    keys = ApiKeys.from_setting(settings.api_keys.get_secret_value())
    log.info("ready in %.1f s since the app began loading (loading the model took %.1f s): serving %s on %s; "
             "sessions and jobs in %s; %s", time.monotonic() - startup.began, loaded_s, predictor.model_id, predictor.device,
             session_store.backend, f"{len(keys)} API key(s)" if keys.enabled else "no API keys (open access)")
    return Services(settings, predictor, engine, live, job_store, runner, metrics, spool, redis, keys)


async def load(settings: Settings, metrics: Metrics, startup: Startup) -> None:
    """Start everything in the background; a failure is kept in `startup.error`, logged on one line."""
    try:
        startup.services = await start_services(settings, metrics, startup)
    except asyncio.CancelledError:
        raise
    except Exception as error:
        startup.error = first_line(error)
        log.error("failed to start while %s: %s", startup.phase, startup.error,
                  exc_info=not isinstance(error, USER_ERRORS))


async def stop_services(svc: Services) -> None:
    await svc.runner.close()
    await svc.engine.close()
    svc.jobs.close()  # in memory, its jobs die with the process: so do their blobs
    if svc.redis is not None:
        await svc.redis.aclose()
    if svc.settings.spool_dir is None:
        shutil.rmtree(svc.spool, ignore_errors=True)


async def drain(svc: Services) -> None:
    svc.draining = True
    streams = list(svc.streams)
    shutdown_log.info("shutting down: giving back running jobs, closing %d stream(s) after their frames", len(streams))
    await svc.runner.close()
    for connection in streams:
        connection.go_away()
    deadline = time.monotonic() + svc.settings.shutdown_timeout_s
    while svc.streams and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for connection in list(svc.streams):  # stuck (e.g. a client that stopped reading): close it now
        with contextlib.suppress(Exception):  # already closing or gone
            await asyncio.wait_for(connection.ws.close(GOING_AWAY, "server shutting down"), 1.0)
    shutdown_log.info("shutdown drain finished")
