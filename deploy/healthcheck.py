#!/usr/bin/env python3
"""Container health check: exit 0 when the local server's GET /readyz answers 200, else 1.

Docker's HEALTHCHECK runs it inside the container (as `vsod-healthcheck`). Standard library only,
so the image needs no curl; it reads the same VSOD_HOST / VSOD_PORT the server listens on.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

TIMEOUT_S = 4.0  # below the HEALTHCHECK --timeout, so the script reports instead of being killed


def readyz_url() -> str:
    host = os.environ.get("VSOD_HOST", "127.0.0.1")
    if host in ("", "0.0.0.0", "::", "[::]"):  # listening everywhere: ask over loopback
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{os.environ.get('VSOD_PORT', '8000')}/readyz"


def main() -> int:
    url = readyz_url()
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            status = response.status
    except urllib.error.HTTPError as error:  # 503: alive but not ready (model loading, Redis down)
        detail = error.read(300).decode("utf-8", "replace").strip()
        print(f"vsod-healthcheck: {url} answered {error.code} {detail}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"vsod-healthcheck: {url} unreachable: {error}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"vsod-healthcheck: {url} answered {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
