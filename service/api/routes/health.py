"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse

from ..deps import Services, caller, services
from ..errors import problems
from ..schemas import Health, Ready

router = APIRouter(tags=["health"])
READY_TIMEOUT_S = 1.0  # a Redis that takes longer than this to answer PING is as good as down


@router.get("/healthz", response_model=Health, summary="The process is alive")
async def healthz() -> Health:
    return Health()


@router.get("/readyz", response_model=Ready, responses=problems(503), summary="The model is loaded and the store reachable")
async def readyz(svc: Services = Depends(services)) -> Ready | JSONResponse:
    if svc.draining:
        return JSONResponse({"detail": "shutting down"}, status_code=503)
    try:
        await asyncio.wait_for(svc.sessions.ping(), READY_TIMEOUT_S)
    except Exception as error:  # any failure to reach the store means: do not send traffic here
        reason = str(error) or type(error).__name__
        return JSONResponse({"detail": f"session store ({svc.sessions.backend}) unreachable: {reason}"}, status_code=503)
    return Ready(model=svc.predictor.model_id, device=str(svc.predictor.device), cache=svc.sessions.backend)  # type: ignore[arg-type]


@router.get("/metrics", summary="Prometheus metrics", response_class=Response, dependencies=[Depends(caller)],
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"},
                        **problems(401, 403)})
async def metrics(svc: Services = Depends(services)) -> Response:
    return Response(svc.metrics.render(), media_type=svc.metrics.content_type)
