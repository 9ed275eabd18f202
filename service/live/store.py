"""Where live sessions' states are kept: Redis (shared by replicas) or this process, with a sliding TTL.

Both backends store `SessionState.to_bytes()` under the session's id, with the same sliding TTL
(reads through `get`/`get_many` and every write refresh it), so one test suite runs against both.

Redis layout: `<prefix>:session:<id>` -> the state's bytes, with `EX session_ttl_s` (`<id>` is
`<owner>:<name>` when API keys are on, see `service.auth.scoped`).

Redis faults: every Redis failure or slow answer (over `timeout_s`) becomes `StoreUnavailable`,
and for `retry_s` afterwards calls fail at once without touching Redis (a circuit breaker), so a
stream whose store is down keeps its frame rate instead of waiting on timeouts; the first call
after that tries Redis again, and the stream recovers by itself when it answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from .state import SessionState, StateError

log = logging.getLogger("vsod.sessions")
T = TypeVar("T")


class StoreUnavailable(ConnectionError):
    """The session store cannot be reached (or answers too slowly) right now."""


class SessionStore(ABC):
    """Get and put session states by id with a sliding TTL; batch forms take one round trip."""

    backend: str
    ttl_s: float

    async def get(self, session_id: str, refresh: bool = True) -> SessionState | None:
        return (await self.get_many([session_id], refresh))[0]

    async def put(self, session_id: str, state: SessionState) -> None:
        await self.put_many([(session_id, state)])

    @abstractmethod
    async def get_many(self, session_ids: Sequence[str], refresh: bool = True) -> list[SessionState | None]:
        """States in order (None where missing, expired or unreadable); `refresh` extends their TTL."""

    @abstractmethod
    async def put_many(self, states: Sequence[tuple[str, SessionState]]) -> None: ...

    @abstractmethod
    async def delete(self, session_id: str) -> bool:
        """True when a state was there."""

    @abstractmethod
    async def expires_in(self, session_id: str) -> float | None:
        """Seconds until the state expires, None when there is none."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise when the backing store cannot be reached."""


def _parse(data: bytes | None) -> SessionState | None:
    if data is None:
        return None
    try:
        return SessionState.from_bytes(data)
    except StateError:
        return None  # unreadable bytes count as no session: the stream restarts its context


class RedisSessionStore(SessionStore):
    backend = "redis"

    def __init__(self, client: Redis, prefix: str = "vsod", ttl_s: float = 600, timeout_s: float | None = None,
                 retry_s: float = 1.0) -> None:
        self.client, self.prefix, self.ttl_s = client, prefix, ttl_s
        self.timeout_s, self.retry_s = timeout_s, retry_s
        self._down_until = 0.0  # monotonic time before which calls fail fast
        self._down_reason: str | None = None

    async def _call(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run one Redis operation through the breaker; any failure becomes StoreUnavailable."""
        if self._down_reason is not None and time.monotonic() < self._down_until:
            raise StoreUnavailable(f"the session store is unavailable: {self._down_reason}")
        try:
            result = await asyncio.wait_for(operation(), self.timeout_s)
        except (TimeoutError, RedisError, OSError) as error:
            reason = str(error) or f"no answer within {self.timeout_s:g} s"
            if self._down_reason is None:
                log.warning("session store unavailable (%s); streams go on without temporal context", reason)
            self._down_until, self._down_reason = time.monotonic() + self.retry_s, reason
            raise StoreUnavailable(f"the session store is unavailable: {reason}") from None
        if self._down_reason is not None:
            log.warning("session store reachable again")
            self._down_reason = None
        return result

    def key(self, session_id: str) -> str:
        return f"{self.prefix}:session:{session_id}"

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl_s * 1000))

    async def get_many(self, session_ids: Sequence[str], refresh: bool = True) -> list[SessionState | None]:
        if not session_ids:
            return []

        async def read() -> list[bytes | None]:
            async with self.client.pipeline(transaction=False) as pipe:
                for sid in session_ids:
                    if refresh:
                        pipe.getex(self.key(sid), px=self._ttl_ms)
                    else:
                        pipe.get(self.key(sid))
                return await pipe.execute()

        values = await self._call(read)
        return [_parse(value) for value in values]

    async def put_many(self, states: Sequence[tuple[str, SessionState]]) -> None:
        if not states:
            return

        async def write() -> None:
            async with self.client.pipeline(transaction=False) as pipe:
                for session_id, state in states:
                    pipe.set(self.key(session_id), state.to_bytes(), px=self._ttl_ms)
                await pipe.execute()

        await self._call(write)

    async def delete(self, session_id: str) -> bool:
        return bool(await self._call(lambda: self.client.delete(self.key(session_id))))

    async def expires_in(self, session_id: str) -> float | None:
        ms = await self._call(lambda: self.client.pttl(self.key(session_id)))
        return ms / 1000 if ms >= 0 else None

    async def ping(self) -> None:
        """Always asks Redis (readiness must tell the truth), and closes the breaker when it answers."""
        await self.client.ping()
        self._down_until = 0.0


class MemorySessionStore(SessionStore):
    """The embedded default: a dict of bytes with expiry times, same semantics as Redis.

    It stores bytes, not objects, so a state makes the same round trip through its format as it
    would through Redis. Expired entries are dropped on access and swept on writes.
    """

    backend = "memory"

    def __init__(self, ttl_s: float = 600, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s, self.clock = ttl_s, clock
        self._data: dict[str, tuple[float, bytes]] = {}
        self._next_sweep = 0.0

    def _live(self, session_id: str) -> bytes | None:
        entry = self._data.get(session_id)
        if entry is None:
            return None
        if entry[0] <= self.clock():
            del self._data[session_id]
            return None
        return entry[1]

    async def get_many(self, session_ids: Sequence[str], refresh: bool = True) -> list[SessionState | None]:
        out = []
        for sid in session_ids:
            data = self._live(sid)
            if data is not None and refresh:
                self._data[sid] = (self.clock() + self.ttl_s, data)
            out.append(_parse(data))
        return out

    async def put_many(self, states: Sequence[tuple[str, SessionState]]) -> None:
        now = self.clock()
        for session_id, state in states:
            self._data[session_id] = (now + self.ttl_s, state.to_bytes())
        if now >= self._next_sweep:  # amortised: at most one full sweep per second
            self._next_sweep = now + 1.0
            for sid in [sid for sid, (expires, _) in self._data.items() if expires <= now]:
                del self._data[sid]

    async def delete(self, session_id: str) -> bool:
        live = self._live(session_id) is not None
        self._data.pop(session_id, None)
        return live

    async def expires_in(self, session_id: str) -> float | None:
        if self._live(session_id) is None:
            return None
        return self._data[session_id][0] - self.clock()

    async def ping(self) -> None:
        return None

    def __len__(self) -> int:
        now = self.clock()
        return sum(1 for expires, _ in self._data.values() if expires > now)
