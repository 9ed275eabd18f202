"""Run the service under uvicorn: `serve(Settings(...))`, `vsod serve`, or `python -m service.server`.

`python -m service.server` takes every setting from `VSOD_*` environment variables.
"""

from __future__ import annotations

import logging
import sys

import uvicorn
from pydantic import ValidationError

from .model import ModelStore
from .settings import Settings


def serve(settings: Settings) -> None:
    """Check the model exists (one clear error, not a traceback), then serve until stopped."""
    ModelStore(settings.model_store).manifest(settings.model)  # raises ModelStoreError
    from .api import create_app

    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # Above the frame limit, so an oversized frame gets a clear error message on an open
        # session instead of the protocol closing the connection (1009).
        ws_max_size=max(16 * 1024 * 1024, 2 * settings.max_frame_bytes),
        timeout_graceful_shutdown=10,
    )


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
