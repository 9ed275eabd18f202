"""Live sessions' temporal state, owned in one place.

- what a session's state holds and its bytes format: `state.py` (`SessionState`);
- where states are kept (Redis or this process, TTLs, the outage breaker): `store.py`;
- when a stored state may be continued, at connect time and per frame: `policy.py`;
- an open stream's slot in front of the engine (latest wins, pipelining, ordered reset/close): `slot.py`;
- the owner the API and the engine talk to: `sessions.py` (`LiveSessions`, the engine's `StateIO`).
"""

from .policy import EXPIRED, RECOVERED, ResumePolicy, Resumption
from .sessions import Connected, LiveSessions
from .slot import FrameRefused, StreamClosing, StreamReset, StreamSlot
from .state import Carried, SessionState, StateError, StateMismatchError, valid_session_id
from .store import MemorySessionStore, RedisSessionStore, SessionStore, StoreUnavailable

__all__ = [
    "EXPIRED",
    "RECOVERED",
    "Carried",
    "Connected",
    "FrameRefused",
    "LiveSessions",
    "MemorySessionStore",
    "RedisSessionStore",
    "ResumePolicy",
    "Resumption",
    "SessionState",
    "SessionStore",
    "StateError",
    "StateMismatchError",
    "StoreUnavailable",
    "StreamClosing",
    "StreamReset",
    "StreamSlot",
    "valid_session_id",
]
