"""The FastAPI application factory and its lifespan: model, stores, engine and job worker.

    app = create_app(Settings(redis_url="redis://127.0.0.1:6379/0"))

Everything a process holds is built once at startup (the model loaded onto the best device and
warmed up) and closed at shutdown; routes reach it through `deps.services`.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import torch
from fastapi import Depends, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from redis.asyncio import Redis

from .. import __version__
from ..auth import ApiKeys
from ..engine import Engine, inference_executor
from ..job_store import JobStore, MemoryJobStore, RedisJobStore
from ..jobs import JobRunner
from ..metrics import Metrics, RequestMetrics
from ..model import ModelStore, Predictor
from ..sessions import MemorySessionCache, RedisSessionCache, SessionCache
from ..settings import Settings, get_settings
from . import errors
from .deps import Services, caller
from .routes import clips, health, images, models, sessions, stream

log = logging.getLogger("vsod")
STATIC = Path(__file__).resolve().parents[1] / "static"

DESCRIPTION = """
Video salient object detection: a mask per frame from a fast spatiotemporally distilled student.

* **Images**: `POST /v1/images` (stateless).
* **Clips**: `POST /v1/clips` → job id; `GET /v1/jobs/{id}`; `GET /v1/jobs/{id}/result?format=zip|mp4|npz`.
* **Live streams**: WebSocket `/v1/stream?session_id=<id>` (no id: the server makes one).
  The first server message is `{"type":"session","session_id":"…","frame":<next index>}`.
  Send each frame as one binary message (JPEG or PNG). For every processed frame the server sends
  `{"type":"mask","frame":…,"width":…,"height":…,"latency_ms":…,"dropped":…}` and then the mask as one
  binary message (PNG, or raw 8-bit row-major bytes after `{"type":"config","format":"raw"}`).
  Control messages: `{"type":"config","format":"png"|"raw","threshold":null|0..1}`, `{"type":"reset"}`,
  `{"type":"close"}`. Errors: `{"type":"error","code":…,"message":…}`; the session goes on.
  At most one frame waits per session: a newer frame replaces it (counted in `dropped`).
  The temporal state lives in the session cache (Redis with `VSOD_REDIS_URL`), so a client that
  reconnects with its `session_id`, to this or another replica, continues where it left off.
  Each mask message also says `"temporal"`: false while the session store (Redis) is unreachable,
  when frames run one by one without temporal context; the stream recovers by itself.
* **Sessions**: `GET /v1/sessions/{id}`, `DELETE /v1/sessions/{id}`.
* **API keys** (when the server sets `VSOD_API_KEYS`): send `X-API-Key` (the WebSocket also takes
  `?api_key=`); 401 without a key, 403 for an unknown one. Sessions and jobs belong to the key that
  made them; another key gets 404. `/healthz`, `/readyz`, the docs and the page at `/` need no key.
* **Limits** (413/415 and stream errors): see docs/reliability.md.
"""

TAGS = [
    {"name": "images", "description": "One image in, one mask out."},
    {"name": "clips", "description": "Upload a video; its masks are computed by a background job."},
    {"name": "sessions", "description": "Temporal state of live streams (WebSocket `/v1/stream`)."},
    {"name": "models", "description": "The model store."},
    {"name": "health", "description": "Liveness, readiness, Prometheus metrics."},
]


def _device(setting: str) -> str | None:
    return None if setting == "auto" else setting


def _load(settings: Settings, store: ModelStore) -> Predictor:
    if settings.torch_threads:  # a per-thread OpenMP setting: made on the thread that runs the model
        torch.set_num_threads(settings.torch_threads)
    predictor = Predictor.from_store(settings.model, store, _device(settings.device), settings.optimize)
    # One throwaway frame, so the first client does not pay for lazy initialisation.
    predictor.predict_image(np.zeros((32, 32, 3), np.uint8))
    return predictor


async def start_services(settings: Settings, metrics: Metrics) -> Services:
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    store = ModelStore(settings.model_store)
    # Loaded (and traced) on the engine's own thread, the only one that ever runs the model.
    infer = inference_executor()
    predictor = await asyncio.get_running_loop().run_in_executor(infer, _load, settings, store)
    redis: Redis | None = None
    session_cache: SessionCache
    job_store: JobStore
    if settings.redis_url:
        redis = Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=10, health_check_interval=30)
        session_cache = RedisSessionCache(redis, settings.redis_prefix, settings.session_ttl_s,
                                          timeout_s=settings.redis_timeout_s, retry_s=settings.redis_retry_s)
        job_store = RedisJobStore(redis, settings.redis_prefix, settings.job_ttl_s)
    else:
        session_cache = MemorySessionCache(settings.session_ttl_s)
        job_store = MemoryJobStore(settings.job_ttl_s)
    spool = settings.spool_dir or Path(tempfile.mkdtemp(prefix="vsod-spool-"))
    spool.mkdir(parents=True, exist_ok=True)
    engine = Engine(predictor, session_cache, metrics, settings.batch_size, settings.batch_wait_ms, infer)
    await engine.start()
    runner = JobRunner(job_store, engine, spool, workers=settings.job_workers, chunk=settings.clip_chunk,
                       lease_s=settings.job_lease_s, max_attempts=settings.job_max_attempts, metrics=metrics,
                       max_frames=settings.max_clip_frames, max_side=settings.max_frame_side)
    await runner.start()
    keys = ApiKeys.from_setting(settings.api_keys.get_secret_value())
    log.info("serving %s on %s; sessions and jobs in %s; %s", predictor.model_id, predictor.device,
             session_cache.backend, f"{len(keys)} API key(s)" if keys.enabled else "no API keys (open access)")
    return Services(settings, predictor, engine, session_cache, job_store, runner, metrics, spool, redis, keys)


async def stop_services(svc: Services) -> None:
    await svc.runner.close()
    await svc.engine.close()
    if svc.redis is not None:
        await svc.redis.aclose()
    if svc.settings.spool_dir is None:
        shutil.rmtree(svc.spool, ignore_errors=True)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.services = await start_services(settings, metrics)
        try:
            yield
        finally:
            await stop_services(app.state.services)

    app = FastAPI(title="vsod", version=__version__, description=DESCRIPTION, openapi_tags=TAGS, lifespan=lifespan)
    app.dependency_overrides[get_settings] = lambda: settings
    errors.install(app)
    app.add_middleware(RequestMetrics, metrics=metrics)
    app.include_router(health.router)  # /healthz and /readyz are public; /metrics asks for a key itself
    # With VSOD_API_KEYS set these need a key (the WebSocket checks its own: see routes/stream.py).
    for module in (models, images, clips, sessions):
        app.include_router(module.router, dependencies=[Depends(caller)], responses=errors.problems(401, 403))
    app.include_router(stream.router)
    # The live camera page (service/static, no build step); it asks for the API key itself.
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.get("/", include_in_schema=False)(lambda: FileResponse(STATIC / "index.html"))
    return app
