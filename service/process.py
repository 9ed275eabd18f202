"""What a `vsod` process sets up before it imports torch: its OpenMP policy, its listening socket,
and the answers it gives while the server is being imported.

Standard library only, so that `vsod serve` can run it first. libgomp reads `OMP_*` once, when
torch loads it, so the policy must be in the environment before the first `import torch`; and the
socket is bound before the slow imports and the model load, so a busy port is reported at once.
While the server module (and torch with it) is imported, `EarlyAnswers` answers on that socket:
`/healthz` 200, everything else 503 `loading: ...`, the same answers the app gives while its model
loads (`service.api.lifecycle`), so the process is alive to its orchestrator from its first second.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import TracebackType

# Idle OpenMP threads sleep instead of spinning. On a busy 2-core machine spinning threads made
# `vsod predict` on vtest.avi 10x slower (200 frames: 72.6 s spinning, 7.5 s passive) and server
# calls 10-100x slower; on an idle machine passive costs 2 threads up to 3x at batch 1 (bench/README.md),
# which one thread (`VSOD_THREADS=1`) does not pay. An explicit value in the environment wins.
WAIT_POLICY = "PASSIVE"
BACKLOG = 2048  # uvicorn's default
LOADING = "loading"  # how /readyz's 503 detail begins until the process is ready
IMPORTING = "importing the server"  # the first phase, before the app runs


def not_ready(reason: str) -> str:
    """The 503 message of a route that needs the model, while `reason` (e.g. `loading: <phase>`) holds."""
    return f"the service is not ready ({reason}); try again shortly"


def apply_thread_policy(threads: int | None = None) -> bool:
    """Set the OpenMP wait policy (and, given `threads`, the pool size) unless the environment has one.

    False when torch is already imported: the policy then comes too late to take effect.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)
    if threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    return "torch" not in sys.modules


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket listening on host:port; OSError with one line naming the address when it cannot."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                            flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as error:
        raise OSError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart over TIME_WAIT; never shares a live port
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as error:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    sock.set_inheritable(True)
    return sock


class _Answers(BaseHTTPRequestHandler):
    """/healthz 200, /readyz 503 `loading: importing the server`, anything else 503 not ready."""

    def _answer(self) -> None:
        path = self.path.split("?", 1)[0]
        reason = f"{LOADING}: {IMPORTING}"
        status, body = (200, {"status": "ok"}) if path == "/healthz" else (
            503, {"detail": reason if path == "/readyz" else not_ready(reason)})
        data = json.dumps(body).encode()
        self.close_connection = True  # a request body, if any, is never read
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 503:
            self.send_header("Retry-After", "5")
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass  # probes every few seconds would fill the log before it is even configured


class EarlyAnswers:
    """Answer on `sock` from a thread until the `with` block ends; the socket stays open for uvicorn.

    A stdlib server, because nothing else can be imported yet without torch: the block is the import.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.server = HTTPServer(sock.getsockname()[:2], _Answers, bind_and_activate=False)
        self.server.socket.close()  # its own unbound socket: it answers on ours
        self.server.socket = sock
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="vsod-early-answers", daemon=True)

    def __enter__(self) -> EarlyAnswers:
        self.thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.server.shutdown()  # waits for the request in hand; later connections wait in the backlog
        self.thread.join()
