"""Run the service under uvicorn: `vsod serve` (service.cli), `serve(Settings(...))`, or `python -m service.server`.

The process listens first and loads afterwards: a busy port is one line and exit 1 at once, and
`/healthz` answers while the model loads (`service.api.lifecycle`); under `vsod serve` also while
this module is imported (`service.process.EarlyAnswers`). A load that fails stops the server with
one line and exit 1 too. `vsod serve` sets the OpenMP policy before torch is imported
(`service.process`); `python -m service.server` (settings from `VSOD_*` variables) imports torch
with this module, too early for that, and warns unless the environment already sets it.

SIGTERM (or Ctrl-C) first drains the app (`service.api.lifecycle.drain`: jobs back to the queue,
streams answered and closed with 1001), then lets uvicorn shut down; a second signal stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import sys
from types import FrameType

import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError

from .api import create_app
from .api.lifecycle import Startup, drain
from .messages import USER_ERRORS, first_line
from .model import ModelStore
from .process import apply_thread_policy, listen
from .settings import Settings, describe_invalid

STARTUP_FAILURE = 3  # uvicorn.run's exit status when the app's lifespan fails


class StartupFailed(RuntimeError):
    """The model or the stores could not be brought up after the server began listening."""


class GracefulServer(uvicorn.Server):
    """uvicorn's server with the app's drain step run before uvicorn's own shutdown begins
    (uvicorn would otherwise close every WebSocket at once, with 1012, mid-frame)."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, drain_timeout_s: float) -> None:
        super().__init__(config)
        self.app, self.drain_timeout_s = app, drain_timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    async def on_tick(self, counter: int) -> bool:
        startup: Startup | None = getattr(self.app.state, "startup", None)
        if startup is not None and startup.error is not None:
            self.should_exit = True  # loading failed: exit, so an orchestrator restarts the process
        return await super().on_tick(counter)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        services = getattr(self.app.state, "services", None)
        if self._drain is not None or self._loop is None or services is None or not self.started:
            super().handle_exit(sig, frame)  # a second signal, or nothing to drain yet: stop now
            return
        # A signal handler runs between two bytecodes of whatever the loop was doing: schedule, don't run.
        self._loop.call_soon_threadsafe(self._start_drain, services, sig, frame)

    def _start_drain(self, services: object, sig: int, frame: FrameType | None) -> None:
        if self._drain is None:
            self._drain = asyncio.get_running_loop().create_task(self._drain_then_exit(services, sig, frame))

    async def _drain_then_exit(self, services: object, sig: int, frame: FrameType | None) -> None:
        try:
            await asyncio.wait_for(drain(services), self.drain_timeout_s + 5)  # type: ignore[arg-type]
        except Exception:
            logging.getLogger("vsod.shutdown").exception("drain failed; shutting down anyway")
        finally:
            super().handle_exit(sig, frame)


class RedactKeys(logging.Filter):
    """Access and WebSocket log lines show the query string: never write an `api_key` there."""

    PATTERN = re.compile(r"(api_key=)[^&\s\"]*")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self.PATTERN.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args)
        return True


def serve(settings: Settings, sock: socket.socket | None = None) -> None:
    """Listen (unless given the socket), check the model exists, then serve until stopped; the model
    loads while the server already answers. Errors are exceptions with a one-line message."""
    sock = sock or listen(settings.host, settings.port)
    ModelStore(settings.model_store).manifest(settings.model)  # raises ModelStoreError
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # Above the frame limit, so an oversized frame gets a clear error message on an open
        # session instead of the protocol closing the connection (1009).
        ws_max_size=max(16 * 1024 * 1024, 2 * settings.max_frame_bytes),
        # Frames (JPEG/PNG) and masks (PNG) are compressed already: deflating them again cost 4.3 ms
        # of a 12 ms frame round trip on the 2-core box and saved nothing (bench/RESULTS.md).
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=10,
    )  # Config sets up uvicorn's loggers; the filter goes on after that
    for name in ("uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).addFilter(RedactKeys())
    server = GracefulServer(config, app, settings.shutdown_timeout_s)
    server.run(sockets=[sock])
    if not server.started:  # the lifespan failed; uvicorn has logged why
        sys.exit(STARTUP_FAILURE)
    startup: Startup = app.state.startup
    if startup.error is not None:
        raise StartupFailed(f"failed to start while {startup.phase}: {startup.error}")


def describe(error: Exception) -> str:
    """One line for a settings or startup error (pydantic's own message spans several)."""
    if isinstance(error, ValidationError):
        return describe_invalid(error)
    return first_line(error)


def main() -> int:
    given = "OMP_WAIT_POLICY" in os.environ
    if not apply_thread_policy() and not given:
        print("vsod serve: warning: torch was loaded before the OpenMP policy could be set; "
              "`vsod serve` sets it in time", file=sys.stderr)
    try:
        serve(Settings())
    except USER_ERRORS as error:  # ValidationError and ModelStoreError among them
        print(f"vsod serve: error: {describe(error)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
