"""Run the service under uvicorn: `serve(Settings(...))`, `vsod serve`, or `python -m service.server`.

`python -m service.server` takes every setting from `VSOD_*` environment variables.

SIGTERM (or Ctrl-C) first drains the app (`service.api.lifecycle.drain`: jobs back to the queue,
streams answered and closed with 1001), then lets uvicorn shut down; a second signal stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import sys
from types import FrameType

import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError

from .model import ModelStore
from .settings import Settings


STARTUP_FAILURE = 3  # uvicorn.run's exit status when the app fails to start


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
        from .api.lifecycle import drain

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


def serve(settings: Settings) -> None:
    """Check the model exists (one clear error, not a traceback), then serve until stopped."""
    ModelStore(settings.model_store).manifest(settings.model)  # raises ModelStoreError
    from .api import create_app

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
    server.run()
    if not server.started:  # the lifespan failed; uvicorn has logged why
        sys.exit(STARTUP_FAILURE)


def describe(error: Exception) -> str:
    """One line for a settings or startup error (pydantic's own message spans several)."""
    if isinstance(error, ValidationError):
        return "; ".join(f"VSOD_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in error.errors())
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def main() -> int:
    try:
        serve(Settings())
    except (ValueError, RuntimeError, OSError) as error:  # ValidationError and ModelStoreError among them
        print(f"vsod serve: error: {describe(error)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
