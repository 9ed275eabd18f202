"""A live stream's client side, written once and free of I/O: reconnect-and-resume for both clients.

The synchronous (`service.client`) and asyncio (`service.client_async`) clients differ only in how
they perform I/O. What to do, and in which order, is written here as plans: generators that yield
I/O actions (`Open`, `SendText`, `SendBytes`, `Receive`, `Sleep`, `Drop`) and receive their outcomes,
or have the I/O's exception thrown into them. Each client runs a plan with its own small driver, so a
decision about reconnecting, resending or reporting a lost mask exists in one place.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import numpy as np
from pydantic import ValidationError
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from .client_common import StreamError, StreamResult, VsodConnectionError, VsodHTTPError, ws_base
from .protocol import FIRST_MESSAGE, SERVER_MESSAGE, ErrorMessage, MaskHeader, ResetDone, SessionHello, StreamConfig

# Close codes that mean "do not come back with the same request": policy (bad id, refused key).
FINAL_CLOSE_CODES = frozenset({1003, 1008, 4401, 4403})
# I/O failures after which a stream reconnects (a refused handshake over HTTP is not one of them).
RETRYABLE = (OSError, TimeoutError, InvalidHandshake, ConnectionClosed)


@dataclass(frozen=True)
class Open:
    """Open a WebSocket to `url`; the outcome is None."""

    url: str


@dataclass(frozen=True)
class SendText:
    text: str


@dataclass(frozen=True)
class SendBytes:
    data: bytes


@dataclass(frozen=True)
class Receive:
    """Receive one message; the outcome is its str or bytes."""


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Pace:
    """Wait until `interval` seconds have passed since the previous Pace, then note the time."""

    interval: float


@dataclass(frozen=True)
class Drop:
    """Close the connection if there is one, ignoring errors of a broken one."""


Action = Open | SendText | SendBytes | Receive | Sleep | Pace | Drop
Plan = Generator[Action, Any, Any]


def stream_url(base_url: str, session_id: str | None) -> str:
    query = f"?session_id={quote(session_id, safe='')}" if session_id else ""
    return f"{ws_base(base_url.rstrip('/'))}/v1/stream{query}"


def final_close(error: ConnectionClosed) -> StreamError | None:
    if error.rcvd is not None and error.rcvd.code in FINAL_CLOSE_CODES:
        return StreamError("closed", f"the server closed the stream: {error.rcvd.code} {error.rcvd.reason}")
    return None


def resume_gap(expected: int, server_next: int) -> Literal["resend", "lost", "restarted"]:
    """What a reconnection found, for the frame the client sent as session frame `expected`.

    resend: the server never processed it. lost: it did, but its mask never came back.
    restarted: the server's session is elsewhere (expired, reset): its temporal context restarts.
    """
    if server_next == expected:
        return "resend"
    if server_next == expected + 1:
        return "lost"
    return "restarted"


def resume_note(expected: int, server_next: int) -> str | None:
    if resume_gap(expected, server_next) != "restarted":
        return None
    return f"reconnected: the server's session is at frame {server_next}, not {expected}; temporal context restarted"


def stream_result(header: MaskHeader, body: bytes, note: str | None) -> StreamResult:
    height, width = header.height, header.width
    if len(body) != height * width:
        raise StreamError("bad_mask", f"expected {height}x{width} raw mask bytes, got {len(body)}")
    mask = np.frombuffer(body, np.uint8).reshape(height, width).copy()
    return StreamResult(header.frame, mask, header.latency_ms, header.dropped, header.restarted or note,
                        temporal=header.temporal)


def backoff_s(attempt: int) -> float:
    return min(2.0, 0.1 * 2**attempt)


def server_message(text: Any) -> MaskHeader | StreamConfig | ResetDone:
    """A message after the hello; the server's error messages raise StreamError."""
    if not isinstance(text, str):
        raise StreamError("protocol", f"expected a JSON text message, got {len(text)} bytes")
    try:
        message = SERVER_MESSAGE.validate_json(text)
    except ValidationError as error:
        raise StreamError("protocol",
                          f"unexpected message from the server: {text[:200]} ({error.error_count()} problems)") from None
    if isinstance(message, ErrorMessage):
        raise StreamError(message.code, message.message)
    return message


def hello_message(text: Any) -> SessionHello:
    """The first message; a refusal raises ConnectionError (try again: a replica going away) or StreamError."""
    if not isinstance(text, str):
        raise StreamError("protocol", f"expected a JSON text message, got {len(text)} bytes")
    try:
        message = FIRST_MESSAGE.validate_json(text)
    except ValidationError:
        raise StreamError("protocol", f"unexpected first message from the server: {text[:200]}") from None
    if isinstance(message, ErrorMessage):
        if message.code == "shutting_down":
            raise ConnectionError(message.message)
        raise StreamError(message.code, message.message)
    return message


class StreamCursor:
    """Where a client's session stands: its id, the next frame's index (the server's word after each
    reconnection, so a frame is never counted twice nor skipped), and the plans that move it."""

    def __init__(self, base_url: str, session_id: str | None, threshold: float | None = None, retries: int = 5,
                 max_fps: float | None = None) -> None:
        self.base_url, self.session_id = base_url, session_id
        self.threshold, self.retries = threshold, retries
        self.interval = 1.0 / max_fps if max_fps else 0.0
        self.model: str | None = None
        self.next_frame = 0
        self.reconnects = 0
        self.connected = False
        self._note: str | None = None  # a restart the next result should report

    def connect(self, first: bool = False) -> Plan:
        """Open (retrying with backoff), read the hello, ask for raw masks."""
        url = stream_url(self.base_url, self.session_id)
        failures = 0
        while True:
            try:
                yield Open(url)
                hello = hello_message((yield Receive()))
                yield SendText(StreamConfig(format="raw", threshold=self.threshold).text())
                server_message((yield Receive()))  # the config in force
                break
            except InvalidStatus as error:  # the handshake was refused over HTTP (e.g. 401/403)
                yield Drop()
                raise VsodHTTPError(error.response.status_code, error.response.body.decode(errors="replace")[:300]) from error
            except RETRYABLE as error:
                yield Drop()
                if isinstance(error, ConnectionClosed) and (final := final_close(error)):
                    raise final from error
                if failures >= self.retries:
                    raise VsodConnectionError(f"cannot stream to {url}: {error}") from error
                yield Sleep(backoff_s(failures))
                failures += 1
            except BaseException:
                yield Drop()
                raise
        expected = self.next_frame
        self.session_id, self.model, self.next_frame = hello.session_id, hello.model, hello.frame
        self.connected = True
        self._note = hello.restarted
        if not first:
            self.reconnects += 1
            self._note = self._note or resume_note(expected, self.next_frame)

    def send(self, data: bytes) -> Plan:
        """Send one frame and return its StreamResult; reconnect and resend when the connection drops."""
        failures = 0
        while True:
            if not self.connected:
                expected = self.next_frame
                yield from self.connect()
                if resume_gap(expected, self.next_frame) == "lost":  # processed, but its mask never came
                    return StreamResult(expected, None, restarted=self._take_note(), lost=True)
            try:
                if self.interval:
                    yield Pace(self.interval)
                yield SendBytes(data)
                header, body = yield from self._mask()
            except (ConnectionClosed, OSError, TimeoutError) as error:
                if isinstance(error, ConnectionClosed) and (final := final_close(error)):
                    raise final from error
                yield from self.drop()
                if failures >= self.retries:
                    raise VsodConnectionError(f"the stream kept dropping: {error}") from error
                failures += 1
                continue
            result = stream_result(header, body, self._take_note())
            self.next_frame = result.frame + 1
            return result

    def reset(self) -> Plan:
        """Forget the session's temporal context; the next frame is frame 0 again."""
        if not self.connected:
            yield from self.connect()
        yield SendText(json.dumps({"type": "reset"}))
        while not isinstance(server_message((yield Receive())), ResetDone):
            pass
        self.next_frame = 0

    def drop(self) -> Plan:
        yield Drop()
        self.connected = False

    def _mask(self) -> Generator[Action, Any, tuple[MaskHeader, bytes]]:
        while True:
            message = server_message((yield Receive()))
            if isinstance(message, MaskHeader):
                body = yield Receive()
                if not isinstance(body, bytes):
                    raise StreamError("protocol", "expected the mask's bytes after its header")
                return message, body

    def _take_note(self) -> str | None:
        note, self._note = self._note, None
        return note


class CursorView:
    """Where a client's live stream stands, read from its `cursor` (both clients' streams show it)."""

    cursor: StreamCursor

    @property
    def session_id(self) -> str | None:
        return self.cursor.session_id

    @property
    def next_frame(self) -> int:
        """The session index the next frame will get (the server's word after each reconnection)."""
        return self.cursor.next_frame

    @property
    def model(self) -> str | None:
        return self.cursor.model

    @property
    def reconnects(self) -> int:
        return self.cursor.reconnects
