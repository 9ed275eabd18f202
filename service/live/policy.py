"""The resume policy: which stored state a live session's next frame may continue, and what it says
when it cannot. One policy, used when a client connects and when the engine loads a batch.

- A state made by another model or input size is never continued: the session restarts at frame 0
  and says why (`refused`).
- A state that expired or was deleted while the client still counts frames restarts at frame 0
  (`EXPIRED`).
- While the store cannot be read, frames run without temporal context and keep the client's frame
  numbering; the first frame that reaches the store again continues the stored state if it is still
  current (its next frame is the one the client sends), else restarts there (`RECOVERED`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .state import SessionState, StateMismatchError

EXPIRED = "the session's stored state expired or was deleted; its temporal context restarted at frame 0"
RECOVERED = "the session store was unavailable; temporal context restarted at this frame"


def refused(error: StateMismatchError) -> str:
    return f"stored state refused ({error}); temporal context restarted at frame 0"


@dataclass(frozen=True)
class Resumption:
    """The state a session goes on from, why it restarted (if it did), and whether a stored state
    was refused (the caller counts it and may delete it)."""

    state: SessionState
    restarted: str | None = None
    refused: bool = False


class ResumePolicy:
    """The policy for the loaded model (`model_id`, `input_size`)."""

    def __init__(self, model_id: str, input_size: tuple[int, int]) -> None:
        self.model_id = model_id
        self.input_size: tuple[int, int] = (input_size[0], input_size[1])

    def fresh(self, frame: int, created: float, dropped: int = 0) -> SessionState:
        return SessionState(self.model_id, self.input_size, frame, {}, created, created, dropped)

    def at_connect(self, stored: SessionState | None, now: float) -> Resumption:
        """What a connecting client continues: the stored state, or a fresh one at frame 0."""
        if stored is None:
            return Resumption(self.fresh(0, now))
        try:
            return Resumption(stored.check_model(self.model_id, self.input_size))
        except StateMismatchError as error:
            return Resumption(self.fresh(0, now), refused(error), refused=True)

    def for_frame(self, stored: SessionState | None, expected: int, after_outage: bool, available: bool,
                  now: float) -> Resumption:
        """What a frame the client counts as `expected` runs with, given what the store holds
        (`available` False: the store could not be read)."""
        created = stored.created if stored is not None else now
        if not available:
            return Resumption(self.fresh(expected, created))
        current = stored is not None and stored.frame == expected
        if after_outage and not current:  # a fresh context that keeps the client's frame numbering
            return Resumption(self.fresh(expected, created), RECOVERED)
        if stored is not None:
            try:
                return Resumption(stored.check_model(self.model_id, self.input_size))
            except StateMismatchError as error:
                return Resumption(self.fresh(0, now), refused(error), refused=True)
        return Resumption(self.fresh(0, now), EXPIRED if expected > 0 else None)
