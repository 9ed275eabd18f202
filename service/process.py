"""What a `vsod` process sets up before it imports torch: its OpenMP policy and its listening socket.

Standard library only, so that `vsod serve` can run it first. libgomp reads `OMP_*` once, when
torch loads it, so the policy must be in the environment before the first `import torch`; and the
socket is bound before the slow imports and the model load, so a busy port is reported at once and
health probes queue on a listening socket instead of being refused.
"""

from __future__ import annotations

import os
import socket
import sys

# Idle OpenMP threads sleep instead of spinning. On a busy 2-core machine spinning threads made
# `vsod predict` on vtest.avi 10x slower (200 frames: 72.6 s spinning, 7.5 s passive) and server
# calls 10-100x slower; on an idle machine passive costs 2 threads up to 3x at batch 1 (bench/README.md),
# which one thread (`VSOD_TORCH_THREADS=1`) does not pay. An explicit value in the environment wins.
WAIT_POLICY = "PASSIVE"
BACKLOG = 2048  # uvicorn's default


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
