"""Look at or end a live session (its temporal state in the session store)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, HTTPException, Path, Response

from ...auth import scoped
from ...live import valid_session_id
from ..deps import Services, caller, services
from ..errors import problems
from ..schemas import SessionInfo

router = APIRouter(prefix="/v1", tags=["sessions"])
SessionId = Path(description="the id the stream's first message gave", examples=["0b5c7a52-8f0e-4a52-9a43-5a0f1d7f7e11"])


def _missing(session_id: str, svc: Services) -> HTTPException:
    if not valid_session_id(session_id):  # never echo what is not an id (a 10,000-character one, say)
        return HTTPException(404, "no such session: session ids are 1-128 of A-Z a-z 0-9 _ . -")
    return HTTPException(404, f"no session {session_id!r} (never streamed, deleted, or idle for over "
                              f"{svc.settings.session_ttl_s:g} s)")


@router.get("/sessions/{session_id}", response_model=SessionInfo, responses=problems(404, 503),
            summary="A session's progress (does not extend its TTL)")
async def get_session(session_id: str = SessionId, svc: Services = Depends(services),
                      owner: str = Depends(caller)) -> SessionInfo:
    key = scoped(owner, session_id)  # another API key's session of the same name is another session
    state = await svc.live.get(key) if valid_session_id(session_id) else None
    if state is None:
        raise _missing(session_id, svc)
    now = time.time()
    return SessionInfo(
        session_id=session_id, frame=state.frame, dropped=state.dropped, model_id=state.model_id,
        created=state.created, updated=state.updated, age_s=max(0.0, now - state.created),
        idle_s=max(0.0, now - state.updated), expires_in_s=await svc.live.expires_in(key),
    )


@router.delete("/sessions/{session_id}", status_code=204, response_class=Response, responses=problems(404, 503),
               summary="Forget a session's temporal state")
async def delete_session(session_id: str = SessionId, svc: Services = Depends(services),
                         owner: str = Depends(caller)) -> Response:
    if not (valid_session_id(session_id) and await svc.live.delete(scoped(owner, session_id))):
        raise _missing(session_id, svc)
    return Response(status_code=204)
