"""The session cache: each live stream's temporal state, in Redis or in this process, with a TTL.

A session is data, not a connection: `SessionRecord` holds the model's stream-state bytes (which
name the model, the input size and the next frame index) plus bookkeeping, so any process that
reaches the same cache can serve the session's next frame. Both backends store the same bytes
with the same sliding TTL (reads through `get`/`get_many` and every write refresh it), so one test
suite runs against both.

Redis layout: `<prefix>:session:<id>` -> `SessionRecord.to_bytes()`, with `EX session_ttl_s`
(`<id>` is `<owner>:<name>` when API keys are on, see `service.auth.scoped`).

Redis faults: every Redis failure or slow answer (over `timeout_s`) becomes `CacheUnavailable`,
and for `retry_s` afterwards calls fail at once without touching Redis (a circuit breaker), so a
stream whose store is down keeps its frame rate instead of waiting on timeouts; the first call
after that tries Redis again, and the stream recovers by itself when it answers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import struct
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("vsod.sessions")
T = TypeVar("T")

MAGIC = b"VSDR"
RECORD_VERSION = 1
_LENGTH = struct.Struct("<I")
SESSION_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


class SessionRecordError(ValueError):
    """Bytes in the cache are not a session record of this version."""


class CacheUnavailable(ConnectionError):
    """The session store cannot be reached (or answers too slowly) right now."""


def valid_session_id(session_id: str) -> bool:
    """Ids are client-chosen; keep them to a safe key alphabet and length."""
    return bool(SESSION_ID.match(session_id))


@dataclass(frozen=True)
class SessionRecord:
    session_id: str
    state: bytes  # StreamState.to_bytes(): model id, input size, next frame index, features
    frame: int  # the next frame's index, copied out of the state so readers need not parse it
    model_id: str
    created: float  # wall-clock seconds (time.time()), so replicas agree
    updated: float
    dropped: int = 0  # frames dropped by backpressure over the session's life

    def to_bytes(self) -> bytes:
        header = asdict(self)
        del header["state"], header["session_id"]
        header["version"] = RECORD_VERSION
        raw = json.dumps(header, separators=(",", ":")).encode()
        return MAGIC + _LENGTH.pack(len(raw)) + raw + self.state

    @classmethod
    def from_bytes(cls, session_id: str, data: bytes) -> SessionRecord:
        if len(data) < 8 or data[:4] != MAGIC:
            raise SessionRecordError("not a vsod session record")
        (length,) = _LENGTH.unpack_from(data, 4)
        try:
            header = json.loads(data[8 : 8 + length])
            if header.pop("version") != RECORD_VERSION:
                raise SessionRecordError("session record of another version")
            return cls(session_id=session_id, state=bytes(data[8 + length :]), **header)
        except (ValueError, KeyError, TypeError) as error:
            raise SessionRecordError(f"corrupt session record: {error}") from None

    def touched(self, **changes: object) -> SessionRecord:
        return replace(self, updated=time.time(), **changes)


class SessionCache(ABC):
    """Get and put session records with a sliding TTL; batch forms take one round trip."""

    backend: str
    ttl_s: float

    async def get(self, session_id: str, refresh: bool = True) -> SessionRecord | None:
        return (await self.get_many([session_id], refresh))[0]

    async def put(self, record: SessionRecord) -> None:
        await self.put_many([record])

    @abstractmethod
    async def get_many(self, session_ids: Sequence[str], refresh: bool = True) -> list[SessionRecord | None]:
        """Records in order (None where missing, expired or unreadable); `refresh` extends their TTL."""

    @abstractmethod
    async def put_many(self, records: Sequence[SessionRecord]) -> None: ...

    @abstractmethod
    async def delete(self, session_id: str) -> bool:
        """True when a record was there."""

    @abstractmethod
    async def expires_in(self, session_id: str) -> float | None:
        """Seconds until the record expires, None when there is none."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise when the backing store cannot be reached."""


def _parse(session_id: str, data: bytes | None) -> SessionRecord | None:
    if data is None:
        return None
    try:
        return SessionRecord.from_bytes(session_id, data)
    except SessionRecordError:
        return None  # unreadable bytes count as no session: the stream restarts its context


class RedisSessionCache(SessionCache):
    backend = "redis"

    def __init__(self, client: Redis, prefix: str = "vsod", ttl_s: float = 600, timeout_s: float | None = None,
                 retry_s: float = 1.0) -> None:
        self.client, self.prefix, self.ttl_s = client, prefix, ttl_s
        self.timeout_s, self.retry_s = timeout_s, retry_s
        self._down_until = 0.0  # monotonic time before which calls fail fast
        self._down_reason: str | None = None

    async def _call(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run one Redis operation through the breaker; any failure becomes CacheUnavailable."""
        if self._down_reason is not None and time.monotonic() < self._down_until:
            raise CacheUnavailable(f"the session store is unavailable: {self._down_reason}")
        try:
            result = await asyncio.wait_for(operation(), self.timeout_s)
        except (RedisError, OSError, asyncio.TimeoutError) as error:
            reason = str(error) or f"no answer within {self.timeout_s:g} s"
            if self._down_reason is None:
                log.warning("session store unavailable (%s); streams go on without temporal context", reason)
            self._down_until, self._down_reason = time.monotonic() + self.retry_s, reason
            raise CacheUnavailable(f"the session store is unavailable: {reason}") from None
        if self._down_reason is not None:
            log.warning("session store reachable again")
            self._down_reason = None
        return result

    def key(self, session_id: str) -> str:
        return f"{self.prefix}:session:{session_id}"

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl_s * 1000))

    async def get_many(self, session_ids: Sequence[str], refresh: bool = True) -> list[SessionRecord | None]:
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
        return [_parse(sid, value) for sid, value in zip(session_ids, values)]

    async def put_many(self, records: Sequence[SessionRecord]) -> None:
        if not records:
            return

        async def write() -> None:
            async with self.client.pipeline(transaction=False) as pipe:
                for record in records:
                    pipe.set(self.key(record.session_id), record.to_bytes(), px=self._ttl_ms)
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


class MemorySessionCache(SessionCache):
    """The embedded default: a dict of bytes with expiry times, same semantics as Redis.

    It stores bytes, not objects, so a record makes the same round trip through its format as it
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

    async def get_many(self, session_ids: Sequence[str], refresh: bool = True) -> list[SessionRecord | None]:
        out = []
        for sid in session_ids:
            data = self._live(sid)
            if data is not None and refresh:
                self._data[sid] = (self.clock() + self.ttl_s, data)
            out.append(_parse(sid, data))
        return out

    async def put_many(self, records: Sequence[SessionRecord]) -> None:
        now = self.clock()
        for record in records:
            self._data[record.session_id] = (now + self.ttl_s, record.to_bytes())
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
