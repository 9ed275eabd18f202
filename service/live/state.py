"""What a live session's state holds, and its one bytes format.

A session is data, not a connection: whatever process holds these bytes can serve its next frame.

`SessionState` holds
- `carried`: the tensors the model carries from one frame to the next, by name (today the previous
  frame's projected stride-32 features, `features`); empty before the first frame. What they are is
  the model's business (`Predictor`); this format stores any float32 arrays by name;
- `model_id` and `input_size`: the model and input size that made `carried`;
- `frame`: the index the session's *next* frame will get (= frames processed);
- `created`, `updated` (wall-clock seconds, so replicas agree) and `dropped` (frames dropped by
  backpressure over the session's life).

Bytes: MAGIC (4) | header length (uint32 LE) | JSON header | the arrays' float32 LE bytes in header order.
The header names the format version, so bytes of another version are refused (`StateError`), and
`check_model` refuses a state made by another model or for another input size
(`StateMismatchError`) instead of feeding the network garbage.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field, replace

import numpy as np

MAGIC = b"VSDS"
FORMAT_VERSION = 2
_LENGTH = struct.Struct("<I")
SESSION_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")

Carried = dict[str, np.ndarray]


class StateError(ValueError):
    """The bytes are not a vsod session state (corrupt, truncated or another format version)."""


class StateMismatchError(StateError):
    """The state is valid but was made by another model or for another input size."""


def valid_session_id(session_id: str) -> bool:
    """Ids are client-chosen; keep them to a safe key alphabet and length, matched whole."""
    return SESSION_ID.fullmatch(session_id) is not None


@dataclass(frozen=True)
class SessionState:
    model_id: str
    input_size: tuple[int, int]  # (height, width) the model runs at
    frame: int = 0
    carried: Carried = field(default_factory=dict)
    created: float = 0.0
    updated: float = 0.0
    dropped: int = 0

    def check_model(self, model_id: str, input_size: tuple[int, int]) -> SessionState:
        """This state, if the given model at the given input size can continue it."""
        if self.model_id != model_id:
            raise StateMismatchError(f"stream state belongs to model {self.model_id!r}, not the loaded {model_id!r}")
        if tuple(self.input_size) != tuple(input_size):
            raise StateMismatchError(f"stream state is for input size {tuple(self.input_size)}, not {tuple(input_size)}")
        return self

    def advanced(self, carried: Carried, updated: float, dropped: int) -> SessionState:
        """The state after one more frame."""
        return replace(self, frame=self.frame + 1, carried=carried, updated=updated, dropped=dropped)

    def to_bytes(self) -> bytes:
        arrays = {name: np.ascontiguousarray(value, dtype="<f4") for name, value in self.carried.items()}
        header = json.dumps({
            "version": FORMAT_VERSION, "model_id": self.model_id, "input_size": list(self.input_size),
            "frame": self.frame, "created": self.created, "updated": self.updated, "dropped": self.dropped,
            "arrays": [[name, list(array.shape)] for name, array in arrays.items()],
        }, separators=(",", ":")).encode()
        return b"".join([MAGIC, _LENGTH.pack(len(header)), header, *(array.tobytes() for array in arrays.values())])

    @classmethod
    def from_bytes(cls, data: bytes) -> SessionState:
        if len(data) < 8 or data[:4] != MAGIC:
            raise StateError("not a vsod session state (bad magic)")
        (length,) = _LENGTH.unpack_from(data, 4)
        try:
            header = json.loads(data[8 : 8 + length])
            if header.get("version") != FORMAT_VERSION:
                raise StateError(f"session state format version {header.get('version')} is not {FORMAT_VERSION}")
            carried: Carried = {}
            offset = 8 + length
            for name, shape in header["arrays"]:
                size = 4 * int(np.prod(shape))
                if offset + size > len(data):
                    raise StateError("session state payload is truncated")
                carried[name] = np.frombuffer(data, "<f4", size // 4, offset).reshape(shape).astype(np.float32)
                offset += size
            if offset != len(data):
                raise StateError("session state has bytes beyond its arrays")
            height, width = header["input_size"]
            return cls(str(header["model_id"]), (int(height), int(width)), int(header["frame"]), carried,
                       float(header["created"]), float(header["updated"]), int(header["dropped"]))
        except (UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
            if isinstance(error, StateError):
                raise
            raise StateError(f"corrupt session state: {error}") from None
