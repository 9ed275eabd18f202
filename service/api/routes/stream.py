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
- At most one frame waits per session; a newer one replaces it (see `dropped`). Frames over the
  per-stream rate (`VSOD_MAX_STREAM_FPS`) are dropped unread and counted in `dropped` too.
- With API keys on, the key comes as `?api_key=` or an `X-API-Key` header; without a valid one
  the server sends an `unauthorized`/`forbidden` error and closes with 1008. Sessions are
  per key: another key's `session_id` of the same name is a different session.
- Every mask message carries `"timings_ms"`: where the frame's time went on the server (decode,
  wait, state_get, model, state_put, encode; `batch`: frames in its forward pass).
- Every mask message carries `"temporal"`: false when the session store (Redis) could not be used
  for that frame; the stream goes on frame by frame without temporal context and recovers by
  itself when the store answers again (the first frame back carries `"restarted"` unless the
  stored state was still current). The first message says `"temporal": false` when the store
  was down at connect time (the frame index then starts at 0).
- On shutdown (SIGTERM) the frame in flight is answered, then the server closes with 1001.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from fastapi import APIRouter, WebSocket
from pydantic import ValidationError
from starlette.websockets import WebSocketDisconnect, WebSocketState

from ...auth import QUERY, AuthError, scoped
from ...engine import EngineClosed, FrameResult
from ...limits import FrameRate, LimitExceeded, check_image
from ...model import StateError
from ...sessions import CacheUnavailable, valid_session_id
from ...streams import StreamClosing, StreamHandle, StreamReset
from ...video import VideoError, decode_for_model
from ..deps import Services
from ..errors import ws_error
from ..schemas import StreamConfig
from .images import encode_mask

router = APIRouter(tags=["stream"])
GOING_AWAY, POLICY = 1001, 1008


class Connection:
    """One WebSocket: its reader (this coroutine) and a sender task, which never interleave a pair."""

    def __init__(self, ws: WebSocket, svc: Services, handle: StreamHandle, session_id: str) -> None:
        self.ws, self.svc, self.handle, self.session_id = ws, svc, handle, session_id
        self.config = StreamConfig()
        self.rate = FrameRate(svc.settings.max_stream_fps)
        self.close_code, self.close_reason = 1000, ""
        self._send_lock = asyncio.Lock()

    @property
    def closing(self) -> bool:
        return self.close_code != 1000

    def go_away(self) -> None:
        """Shutdown: take no more frames, answer the one in flight, then close with 1001."""
        self.close_code, self.close_reason = GOING_AWAY, "server shutting down"
        self.handle.request_close()

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
                await self.ws.close(self.close_code, self.close_reason)
                return
            if isinstance(event, StreamReset):
                await self.send_json({"type": "reset", "session_id": self.session_id, "frame": 0})
                continue
            await self.send_mask(event)

    async def send_mask(self, result: FrameResult) -> None:
        config = self.config
        encoding = time.perf_counter()
        # `result.mask` is made on the encoding thread (resized there to the frame's size).
        body = await asyncio.to_thread(lambda: encode_mask(result.mask, config.format, config.threshold))
        timings = {**result.timings, "encode": round((time.perf_counter() - encoding) * 1000, 2)}
        header: dict[str, object] = {
            "type": "mask", "frame": result.frame, "width": int(result.size[1]),
            "height": int(result.size[0]), "latency_ms": round(result.latency_ms, 2),
            "dropped": result.dropped, "format": config.format, "temporal": result.temporal, "timings_ms": timings,
        }
        if result.restarted:
            header["restarted"] = result.restarted
        async with self._send_lock:  # the header and its mask go out back to back
            await self.ws.send_text(json.dumps(header))
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
        if not self.rate.allow():  # before decoding, so the excess costs next to nothing
            self.handle.count_dropped()
            self.svc.metrics.rate_limited_frames.inc()
            return
        try:  # on a worker thread, resized for the model there: the model's thread only runs the network
            frame, size = await asyncio.to_thread(decode_for_model, data, self.svc.predictor.input_size, (height, width),
                                                  limits.scaled_jpeg_decode)
        except VideoError as error:
            await self.error("bad_frame", str(error))
            return
        if max(size) > limits.max_frame_side:
            await self.error("frame_too_large", f"the frame is {size[1]}x{size[0]}; the limit is {limits.max_frame_side} a side")
            return
        self.handle.offer(frame, received, size)

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


async def _refuse(ws: WebSocket, code: str, message: str, close_code: int) -> None:
    await ws.send_text(json.dumps(ws_error(code, message)))
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
    key = scoped(owner, session_id)  # the cache's id: each API key has its own namespace
    hello: dict[str, object] = {"type": "session", "session_id": session_id, "frame": 0, "dropped": 0,
                                "model": svc.predictor.model_id, "temporal": True}
    try:
        record = await svc.sessions.get(key)
    except CacheUnavailable:  # the stream starts anyway, without temporal context until the store is back
        record, hello["temporal"] = None, False
    if record is not None:
        try:
            svc.predictor.load_state(record.state)
            hello.update(frame=record.frame, dropped=record.dropped)
        except StateError as error:  # another model or input size: never misread it, start over
            try:
                await svc.sessions.delete(key)
            except CacheUnavailable:
                hello["temporal"] = False
            svc.metrics.state_restarts.inc()
            hello["restarted"] = f"stored state refused ({error}); temporal context restarted at frame 0"
    handle = svc.engine.open_stream(key, int(hello["frame"]), int(hello["dropped"]), bool(hello["temporal"]))  # type: ignore[call-overload]
    connection = Connection(ws, svc, handle, session_id)
    await connection.send_json(hello)
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
            try:
                await ws.close(1000)
            except RuntimeError:
                pass
