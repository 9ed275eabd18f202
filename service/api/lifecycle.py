"""Graceful shutdown: what a replica does between SIGTERM and uvicorn's own shutdown.

`drain(services)` runs first (see `service.server.GracefulServer`):
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
lifespan, but uvicorn itself closes WebSockets first, with 1012.
"""

from __future__ import annotations

import asyncio
import logging
import time

from .deps import Services
from .routes.stream import GOING_AWAY

log = logging.getLogger("vsod.shutdown")


async def drain(svc: Services) -> None:
    svc.draining = True
    streams = list(svc.streams)
    log.info("shutting down: giving back running jobs, closing %d stream(s) after their frames", len(streams))
    await svc.runner.close()
    for connection in streams:
        connection.go_away()
    deadline = time.monotonic() + svc.settings.shutdown_timeout_s
    while svc.streams and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for connection in list(svc.streams):  # stuck (e.g. a client that stopped reading): close it now
        try:
            await asyncio.wait_for(connection.ws.close(GOING_AWAY, "server shutting down"), 1.0)
        except Exception:  # already closing or gone
            pass
    log.info("shutdown drain finished")
