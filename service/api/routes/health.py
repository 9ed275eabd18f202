"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from ..deps import Services, caller, services
from ..errors import problem, problems
from ..lifecycle import Startup
from ..schemas import Health, Ready

router = APIRouter(tags=["health"])
READY_TIMEOUT_S = 1.0  # a Redis that takes longer than this to answer PING is as good as down


@router.get("/healthz", response_model=Health, summary="The process is alive (from its first moment, also while loading)")
async def healthz() -> Health:
    return Health()


@router.get("/readyz", response_model=Ready, responses=problems(503),
            summary="The model is loaded and warmed, and the store reachable (503 `loading: ...` until then)")
async def readyz(request: Request) -> Ready | JSONResponse:
    startup: Startup = request.app.state.startup
    if (reason := startup.not_ready) is not None:
        return problem(503, reason, {"Retry-After": "5"})
    svc = services(request)
    if svc.draining:
        return problem(503, "shutting down")
    try:
        await asyncio.wait_for(svc.live.ping(), READY_TIMEOUT_S)
    except Exception as error:  # noqa: BLE001 - any failure to reach the store means: do not send traffic here
        reason = str(error) or type(error).__name__
        return problem(503, f"session store ({svc.live.backend}) unreachable: {reason}")
    return Ready(model=svc.predictor.model_id, device=str(svc.predictor.device), backend=svc.predictor.backend,
                 cache=svc.live.backend)  # type: ignore[arg-type]


@router.get("/metrics", summary="Prometheus metrics", response_class=Response, dependencies=[Depends(caller)],
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"},
                        **problems(401, 403)})
async def metrics(svc: Services = Depends(services)) -> Response:
    return Response(svc.metrics.render(), media_type=svc.metrics.content_type)
