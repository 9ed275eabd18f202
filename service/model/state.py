"""A stream's temporal state and its versioned bytes format.

The state is data, not a connection: whatever process holds the bytes can serve the next frame.
The header names the model and the input size, so a state made by another model or at another
size is refused (`StateMismatchError`) instead of being fed to the network as garbage.

Layout: MAGIC (4 bytes) | header length (uint32, little endian) | JSON header | float32 payload.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

import numpy as np

MAGIC = b"VSDS"
FORMAT_VERSION = 1
_LENGTH = struct.Struct("<I")


class StateError(ValueError):
    """The bytes are not a vsod stream state (corrupt, truncated or another format version)."""


class StateMismatchError(StateError):
    """The state is valid but was made by another model or for another input size."""


@dataclass(frozen=True)
class StreamState:
    """What the next frame of a stream needs.

    `features` is the previous frame's projected stride-32 tensor, (C, h, w) float32, or None
    before the first frame. `frame_index` is the index the *next* frame will get.
    """

    model_id: str
    input_size: tuple[int, int]  # (height, width) the model runs at
    frame_index: int = 0
    features: np.ndarray | None = None

    def to_bytes(self) -> bytes:
        payload = b""
        shape: list[int] | None = None
        if self.features is not None:
            array = np.ascontiguousarray(self.features, dtype="<f4")
            payload, shape = array.tobytes(), list(array.shape)
        header = json.dumps(
            {
                "version": FORMAT_VERSION,
                "model_id": self.model_id,
                "input_size": list(self.input_size),
                "frame_index": self.frame_index,
                "shape": shape,
            },
            separators=(",", ":"),
        ).encode()
        return MAGIC + _LENGTH.pack(len(header)) + header + payload

    @classmethod
    def from_bytes(
        cls, data: bytes, *, model_id: str | None = None, input_size: tuple[int, int] | None = None
    ) -> StreamState:
        """Parse state bytes; with `model_id`/`input_size` given, refuse a state made for others."""
        if len(data) < 8 or data[:4] != MAGIC:
            raise StateError("not a vsod stream state (bad magic)")
        (length,) = _LENGTH.unpack_from(data, 4)
        try:
            header = json.loads(data[8 : 8 + length])
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise StateError(f"corrupt stream state header: {error}") from None
        if header.get("version") != FORMAT_VERSION:
            raise StateError(f"stream state format version {header.get('version')} is not {FORMAT_VERSION}")
        state_size = tuple(header["input_size"])
        if model_id is not None and header["model_id"] != model_id:
            raise StateMismatchError(
                f"stream state belongs to model {header['model_id']!r}, not the loaded {model_id!r}"
            )
        if input_size is not None and state_size != tuple(input_size):
            raise StateMismatchError(f"stream state is for input size {state_size}, not {tuple(input_size)}")
        features = None
        payload = data[8 + length :]
        if header["shape"] is not None:
            shape = tuple(header["shape"])
            if len(payload) != 4 * int(np.prod(shape)):
                raise StateError("stream state payload is truncated")
            features = np.frombuffer(payload, dtype="<f4").reshape(shape).astype(np.float32)
        elif payload:
            raise StateError("stream state has a payload but no shape")
        return cls(header["model_id"], (int(state_size[0]), int(state_size[1])), int(header["frame_index"]), features)
