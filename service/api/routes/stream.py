"""WebSocket `/v1/stream`: live frames in, masks out, temporal state in the session cache.

Protocol (also in the README):
- Connect to `/v1/stream?session_id=<id>` (omit it and the server makes a UUID4 one). The first
  message is `{"type":"session","session_id":...,"frame":<next frame index>,"dropped":n,"model":...}`;
  it carries `"restarted":<reason>` when the stored state could not be used (made by another
  model or input size): the session then starts again at frame 0 rather than misread it.
- Each binary message is one frame (JPEG or PNG). For each processed frame the server sends
  `{"type":"mask","frame","width","height","latency_ms","dropped"}` and then the mask as one
  binary message (PNG, or raw row-major bytes with format "raw").
- Text messages are JSON control: `{"type":"config","format":"png"|"raw","threshold":null|0..1}`
  (acknowledged with the config in force), `{"type":"reset"}` (acknowledged by
  `{"type":"reset","frame":0}`), `{"type":"close"}` (waiting frames are answered, then close 1000).
- Problems are `{"type":"error","code","message"}` and the session goes on.
- At most one frame waits per session; a newer one replaces it (see `dropped`).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from fastapi import APIRouter, WebSocket
from pydantic import ValidationError
from starlette.websockets import WebSocketDisconnect, WebSocketState

from ...engine import EngineClosed, FrameResult, StreamClosing, StreamHandle, StreamReset
from ...model import StateError
from ...sessions import valid_session_id
from ...video import VideoError, decode_image_bytes
from ..deps import Services
from ..errors import ws_error
from ..schemas import StreamConfig
from .images import encode_mask

router = APIRouter(tags=["stream"])
GOING_AWAY, POLICY = 1001, 1008


class Connection:
    """One WebSocket: its reader (this coroutine) and a sender task, which never interleave a pair."""

    def __init__(self, ws: WebSocket, svc: Services, handle: StreamHandle) -> None:
        self.ws, self.svc, self.handle = ws, svc, handle
        self.config = StreamConfig()
        self._send_lock = asyncio.Lock()

    async def send_json(self, message: dict[str, object]) -> None:
        async with self._send_lock:
            await self.ws.send_text(json.dumps(message))

    async def error(self, code: str, message: str) -> None:
        self.svc.metrics.stream_errors.labels(code).inc()
        await self.send_json(ws_error(code, message))

    async def sender(self) -> None:
        """Masks, reset acknowledgements and the close, in the order the client asked for them."""
        while True:
            try:
                event = await self.handle.next_event()
            except EngineClosed:
                await self.ws.close(GOING_AWAY, "server shutting down")
                return
            except Exception as error:  # the store failed: this frame is lost, the session goes on
                await self.error("unavailable", f"frame not processed: {type(error).__name__}: {error}")
                continue
            if isinstance(event, StreamClosing):
                await self.ws.close(1000)
                return
            if isinstance(event, StreamReset):
                await self.send_json({"type": "reset", "session_id": self.handle.session_id, "frame": 0})
                continue
            await self.send_mask(event)

    async def send_mask(self, result: FrameResult) -> None:
        config = self.config
        body = await asyncio.to_thread(encode_mask, result.mask, config.format, config.threshold)
        header: dict[str, object] = {
            "type": "mask", "frame": result.frame, "width": int(result.mask.shape[1]),
            "height": int(result.mask.shape[0]), "latency_ms": round(result.latency_ms, 2),
            "dropped": result.dropped, "format": config.format,
        }
        if result.restarted:
            header["restarted"] = result.restarted
        async with self._send_lock:  # the header and its mask go out back to back
            await self.ws.send_text(json.dumps(header))
            await self.ws.send_bytes(body)

    async def on_frame(self, data: bytes) -> None:
        received = time.perf_counter()
        limits = self.svc.settings
        if not data:
            await self.error("empty_frame", "the frame is empty (0 bytes)")
            return
        if len(data) > limits.max_frame_bytes:
            await self.error("frame_too_large", f"the frame is {len(data)} bytes; the limit is {limits.max_frame_bytes}")
            return
        try:
            frame = await asyncio.to_thread(decode_image_bytes, data)
        except VideoError as error:
            await self.error("bad_frame", str(error))
            return
        height, width = frame.shape[:2]
        if max(height, width) > limits.max_frame_side:
            await self.error("frame_too_large", f"the frame is {width}x{height}; the limit is {limits.max_frame_side} a side")
            return
        self.handle.offer(frame, received)

    async def on_text(self, text: str) -> bool:
        """Handle a control message; False when the client asked to close."""
        try:
            message = json.loads(text)
        except json.JSONDecodeError as error:
            await self.error("invalid_json", f"text messages must be JSON: {error}")
            return True
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "config":
            try:
                self.config = StreamConfig.model_validate(message)
            except ValidationError as error:
                problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
                await self.error("bad_config", problems)
                return True
            await self.send_json(self.config.model_dump())
        elif kind == "reset":
            self.handle.request_reset()
        elif kind == "close":
            self.handle.request_close()
            return False
        else:
            await self.error("bad_message", 'expected {"type": "config" | "reset" | "close"}, got ' + text[:100])
        return True


@router.websocket("/v1/stream")
async def stream(ws: WebSocket, session_id: str | None = None) -> None:
    svc: Services = ws.app.state.services
    await ws.accept()
    if session_id is not None and not valid_session_id(session_id):
        await ws.send_text(json.dumps(ws_error("bad_session_id", "session_id must be 1-128 of A-Z a-z 0-9 _ . -")))
        await ws.close(POLICY)
        return
    session_id = session_id or str(uuid.uuid4())
    record = await svc.sessions.get(session_id)
    hello: dict[str, object] = {"type": "session", "session_id": session_id, "frame": 0, "dropped": 0,
                                "model": svc.predictor.model_id}
    if record is not None:
        try:
            svc.predictor.load_state(record.state)
            hello.update(frame=record.frame, dropped=record.dropped)
        except StateError as error:  # another model or input size: never misread it, start over
            await svc.sessions.delete(session_id)
            svc.metrics.state_restarts.inc()
            hello["restarted"] = f"stored state refused ({error}); temporal context restarted at frame 0"
    handle = svc.engine.open_stream(session_id, int(hello["frame"]), int(hello["dropped"]))  # type: ignore[call-overload]
    connection = Connection(ws, svc, handle)
    await connection.send_json(hello)
    svc.metrics.active_sessions.inc()
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
        svc.metrics.active_sessions.dec()
        if not sender.done():
            sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        if ws.application_state == WebSocketState.CONNECTED and ws.client_state == WebSocketState.CONNECTED:
            try:
                await ws.close(1000)
            except RuntimeError:
                pass
