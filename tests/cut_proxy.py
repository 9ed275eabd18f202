"""A TCP relay in front of a real server that a test can cut, to make real connection drops."""

from __future__ import annotations

import contextlib
import socket
import threading


class CuttableProxy:
    """A TCP relay in front of the server that the test can cut, as a network drop or a dying
    load balancer would: `drop_next("request")` swallows the client's next bytes (the server
    never sees that frame), `drop_next("response")` swallows the server's next bytes (the frame
    was processed, its mask never arrives); either way every relayed connection then closes."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections = 0
        self._armed: str | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def drop_next(self, direction: str) -> None:
        self._armed = direction

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self.connections += 1
                self._sockets += [client, upstream]
            for src, dst, direction in ((client, upstream, "request"), (upstream, client, "response")):
                threading.Thread(target=self._pump, args=(src, dst, direction), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, direction: str) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                break
            if not data or self._armed == direction:
                if data:
                    self._armed = None
                    self.cut()
                break
            try:
                dst.sendall(data)
            except OSError:
                break
        for sock in (src, dst):
            _close(sock)

    def cut(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _close(sock)

    def close(self) -> None:
        self.listener.close()
        self.cut()


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
