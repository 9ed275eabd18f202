"""WebSocket `/v1/stream`: the protocol (service/protocol.py) adapted to a live session.

Bytes in become frames offered to the session's slot; the slot's events (masks, reset
acknowledgements, the close) become messages. The state, the resume policy and backpressure are the
live-session owner's (service/live/); the limits on frames are the service's (service/limits.py).
With API keys on, the key comes as `?api_key=` or an `X-API-Key` header, and each key has its own
session namespace. On shutdown (SIGTERM) the frame in flight is answered, then the server closes
with 1001.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid

from fastapi import APIRouter, WebSocket
from pydantic import ValidationError
from starlette.websockets import WebSocketDisconnect, WebSocketState

from ...auth import QUERY, AuthError, scoped
from ...engine_types import EngineClosed, FrameResult
from ...limits import FrameRate, LimitExceeded, check_image
from ...live import FrameRefused, StreamClosing, StreamReset, StreamSlot, valid_session_id
from ...masks import encode_mask
from ...protocol import (
    CLIENT_MESSAGE,
    GOING_AWAY,
    NORMAL,
    POLICY,
    CloseRequest,
    MaskHeader,
    ResetDone,
    ServerMessage,
    SessionHello,
    StreamConfig,
)
from ...video import VideoError
from ..deps import Services
from ..errors import ws_error

router = APIRouter(tags=["stream"])


class Connection:
    """One WebSocket: its reader (this coroutine) and a sender task, which never interleave a pair."""

    def __init__(self, ws: WebSocket, svc: Services, slot: StreamSlot, session_id: str) -> None:
        self.ws, self.svc, self.slot, self.session_id = ws, svc, slot, session_id
        self.config = StreamConfig()
        self.rate = FrameRate(svc.settings.max_stream_fps)
        self.close_code, self.close_reason = NORMAL, ""
        self._send_lock = asyncio.Lock()

    @property
    def closing(self) -> bool:
        return self.close_code != NORMAL

    def go_away(self) -> None:
        """Shutdown: take no more frames, answer the one in flight, then close with 1001."""
        self.close_code, self.close_reason = GOING_AWAY, "server shutting down"
        self.slot.request_close()

    async def send(self, message: ServerMessage) -> None:
        async with self._send_lock:
            await self.ws.send_text(message.text())

    async def error(self, code: str, message: str) -> None:
        self.svc.metrics.stream_errors.labels(code).inc()
        await self.send(ws_error(code, message))

    async def sender(self) -> None:
        """Masks, reset acknowledgements and the close, in the order the client asked for them."""
        while True:
            try:
                event = await self.slot.next_event()
            except EngineClosed:
                await self.ws.close(GOING_AWAY, "server shutting down")
                return
            except Exception as error:  # noqa: BLE001 - the store failed: this frame is lost, the session goes on
                await self.error("unavailable", f"frame not processed: {type(error).__name__}: {error}")
                continue
            if isinstance(event, StreamClosing):
                await self.ws.close(self.close_code, self.close_reason)
                return
            if isinstance(event, StreamReset):
                await self.send(ResetDone(session_id=self.session_id))
                continue
            if isinstance(event, FrameRefused):
                await self.error(event.code, event.message)
                continue
            await self.send_mask(event)

    async def send_mask(self, result: FrameResult) -> None:
        config = self.config
        encoding = time.perf_counter()
        # `result.mask` is made on the encoding thread (resized there to the frame's size).
        body = await asyncio.to_thread(lambda: encode_mask(result.mask, config.format, config.threshold))
        header = MaskHeader(
            frame=result.frame, width=int(result.size[1]), height=int(result.size[0]),
            latency_ms=round(result.latency_ms, 2), dropped=result.dropped, format=config.format,
            temporal=result.temporal, restarted=result.restarted,
            timings_ms={**result.timings, "encode": round((time.perf_counter() - encoding) * 1000, 2)},
        )
        async with self._send_lock:  # the header and its mask go out back to back
            await self.ws.send_text(header.text())
            await self.ws.send_bytes(body)

    async def on_frame(self, data: bytes) -> None:
        received = time.perf_counter()
        limits = self.svc.settings
        if self.closing:
            return  # shutting down: the frame in flight is the last one answered
        if not data:
            await self.error("empty_frame", "the frame is empty (0 bytes)")
            return
        if len(data) > limits.max_frame_bytes:
            await self.error("frame_too_large", f"the frame is {len(data)} bytes; the limit is {limits.max_frame_bytes}")
            return
        try:
            width, height = check_image(data, limits.max_frame_side)  # the header's size, before decoding (bombs)
        except LimitExceeded as error:
            await self.error(error.code, str(error))
            return
        except VideoError as error:
            await self.error("bad_frame", str(error))
            return
        if not self.rate.allow():  # before anything else: the excess costs next to nothing
            self.slot.count_dropped()
            self.svc.metrics.rate_limited_frames.inc()
            return
        self.slot.offer(data, (height, width), received)  # decoded only when due (latest wins)

    async def on_text(self, text: str) -> bool:
        """Handle a control message; False when the client asked to close."""
        try:
            message = CLIENT_MESSAGE.validate_json(text)
        except ValidationError as error:
            await self.control_error(text, error)
            return True
        if isinstance(message, StreamConfig):
            self.config = message
            await self.send(self.config)
        elif isinstance(message, CloseRequest):
            self.slot.request_close()
            return False
        else:
            self.slot.request_reset()
        return True

    async def control_error(self, text: str, error: ValidationError) -> None:
        """The error a malformed control message gets: invalid JSON, an unknown type, or a bad config."""
        try:
            kind = json.loads(text)
        except json.JSONDecodeError as problem:
            await self.error("invalid_json", f"text messages must be JSON: {problem}")
            return
        if isinstance(kind, dict) and kind.get("type") == "config":
            problems = "; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in error.errors())
            await self.error("bad_config", problems)
            return
        await self.error("bad_message", 'expected {"type": "config" | "reset" | "close"}, got ' + text[:100])


async def _refuse(ws: WebSocket, code: str, message: str, close_code: int) -> None:
    await ws.send_text(ws_error(code, message).text())
    await ws.close(close_code)


@router.websocket("/v1/stream")
async def stream(ws: WebSocket, session_id: str | None = None) -> None:
    svc: Services = ws.app.state.services
    await ws.accept()
    if svc.draining:
        await _refuse(ws, "shutting_down", "the server is shutting down; connect again (to another replica)", GOING_AWAY)
        return
    try:
        owner = svc.keys.owner(ws.headers.get("x-api-key") or ws.query_params.get(QUERY))
    except AuthError as error:
        await _refuse(ws, error.code, error.message, POLICY)
        return
    if session_id is not None and not valid_session_id(session_id):
        await _refuse(ws, "bad_session_id", "session_id must be 1-128 of A-Z a-z 0-9 _ . -", POLICY)
        return
    session_id = session_id or str(uuid.uuid4())
    connected = await svc.live.connect(scoped(owner, session_id), svc.engine)  # each API key has its own namespace
    connection = Connection(ws, svc, connected.slot, session_id)
    await connection.send(SessionHello(session_id=session_id, frame=connected.frame, dropped=connected.dropped,
                                       model=svc.engine.model_id, temporal=connected.temporal,
                                       restarted=connected.restarted))
    svc.metrics.active_sessions.inc()
    svc.streams.add(connection)
    sender = asyncio.create_task(connection.sender(), name=f"vsod-stream-{session_id}")
    try:
        while not sender.done():
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            if message.get("bytes") is not None:
                await connection.on_frame(message["bytes"])
            elif message.get("text") is not None and not await connection.on_text(message["text"]):
                await asyncio.gather(sender, return_exceptions=True)  # answer waiting frames, then close
                break
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client went away mid-send; its state is already stored
    finally:
        svc.streams.discard(connection)
        svc.metrics.active_sessions.dec()
        if not sender.done():
            sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        if ws.application_state == WebSocketState.CONNECTED and ws.client_state == WebSocketState.CONNECTED:
            with contextlib.suppress(RuntimeError):
                await ws.close(NORMAL)
