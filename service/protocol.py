"""The live-stream protocol on WebSocket `/v1/stream`, defined once: typed messages used by the server's
route, the Python clients and the API description (the page's messages are held to it by a test).

    client                                   server
      ── connect /v1/stream?session_id=<id> ──▶
      ◀── SessionHello ─────────────────────────  the session's next frame index, or an ErrorMessage and a close
      ── frame (binary JPEG or PNG) ──────────▶
      ◀── MaskHeader, then the mask (binary) ──  PNG, or raw 8-bit rows with format "raw"
      ── StreamConfig ────────────────────────▶  ◀── StreamConfig (the config in force)
      ── ResetRequest ────────────────────────▶  ◀── ResetDone (after the frames sent before it)
      ── CloseRequest ────────────────────────▶  waiting frames are answered, then close 1000
      ◀── ErrorMessage ─────────────────────────  a problem with one message; the session goes on

Backpressure: at most one frame waits per session; a newer one replaces it (counted in `dropped`),
as are frames over the per-stream rate. Resume: the temporal state lives in the session store, so a
reconnection with the same `session_id` (to any replica sharing it) continues at the frame index the
hello reports. Close codes: 1000 normal, 1001 the server is shutting down, 1008 a refused key or id,
1013 the server is still loading (try again shortly).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

MaskFormat = Literal["png", "raw"]
NORMAL, GOING_AWAY, POLICY = 1000, 1001, 1008  # WebSocket close codes the server uses
TRY_AGAIN_LATER = 1013  # the server is still loading its model: connect again shortly


class ServerMessage(BaseModel):
    """A JSON text message from the server; optional fields that are unset are left out."""

    def text(self) -> str:
        return self.model_dump_json(exclude_none=True)


class SessionHello(ServerMessage):
    type: Literal["session"] = "session"
    session_id: str
    frame: int = Field(description="the index the session's next frame will get")
    dropped: int = Field(0, description="frames of the session dropped so far")
    model: str = Field(description="model_id of the served model")
    temporal: bool = Field(True, description="false: the session store is unavailable; frames run without context")
    restarted: str | None = Field(None, description="why the stored state could not be continued, if it could not")


class StreamConfig(ServerMessage):
    """How masks come back; sent by the client, acknowledged by the server with the config in force."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["config"] = "config"
    format: MaskFormat = "png"
    threshold: float | None = Field(None, ge=0.0, le=1.0, description="None: 0..255 saliency; else a 0/255 mask")

    def text(self) -> str:
        return self.model_dump_json()  # `threshold: null` is meaningful in the acknowledgement


class ResetRequest(BaseModel):
    type: Literal["reset"] = "reset"


class CloseRequest(BaseModel):
    type: Literal["close"] = "close"


class ResetDone(ServerMessage):
    type: Literal["reset"] = "reset"
    session_id: str
    frame: int = 0


class MaskHeader(ServerMessage):
    """Precedes each mask's binary message."""

    type: Literal["mask"] = "mask"
    frame: int = Field(description="the frame's index in its session")
    width: int
    height: int
    latency_ms: float = Field(description="arrival at the server to mask")
    dropped: int = Field(description="frames of the session dropped so far")
    format: MaskFormat
    temporal: bool = Field(description="false: the session store could not be used for this frame")
    timings_ms: dict[str, float] = Field(default_factory=dict, description="where the frame's time went on the server")
    restarted: str | None = Field(None, description="why the temporal context restarted at this frame, if it did")


class ErrorMessage(ServerMessage):
    type: Literal["error"] = "error"
    code: str = Field(examples=["frame_too_large"])
    message: str


ClientMessage = Annotated[StreamConfig | ResetRequest | CloseRequest, Field(discriminator="type")]
CLIENT_MESSAGE: TypeAdapter[StreamConfig | ResetRequest | CloseRequest] = TypeAdapter(ClientMessage)
FIRST_MESSAGE: TypeAdapter[SessionHello | ErrorMessage] = TypeAdapter(
    Annotated[SessionHello | ErrorMessage, Field(discriminator="type")])
SERVER_MESSAGE: TypeAdapter[MaskHeader | StreamConfig | ResetDone | ErrorMessage] = TypeAdapter(
    Annotated[MaskHeader | StreamConfig | ResetDone | ErrorMessage, Field(discriminator="type")])
MESSAGES = (SessionHello, StreamConfig, ResetRequest, CloseRequest, ResetDone, MaskHeader, ErrorMessage)

_DIRECTION = {SessionHello: "server → client, first", StreamConfig: "client → server; server → client (ack)",
              ResetRequest: "client → server", CloseRequest: "client → server", ResetDone: "server → client",
              MaskHeader: "server → client, then the mask as one binary message", ErrorMessage: "server → client"}


def markdown_table() -> str:
    """The messages as a Markdown table (the README's copy; tests/test_docs.py keeps it equal)."""
    rows = ["| message | direction | fields |", "| --- | --- | --- |"]
    for model in MESSAGES:
        fields = ", ".join(f"`{name}`" + ("" if info.is_required() else "?")
                           for name, info in model.model_fields.items() if name != "type")
        message = f"`{{\"type\":\"{model.model_fields['type'].default}\"}}` {model.__name__}"
        rows.append(f"| {message} | {_DIRECTION[model]} | {fields or '–'} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
