"""The Redis job store: what `service.job_store.JobStore` defines, shared by every replica.

Every call is bounded by `timeout_s` (VSOD_REDIS_TIMEOUT_S, the session store's setting too): a
hanging Redis fails a job request within that time as `redis.exceptions.TimeoutError`, which the
API answers with 503, instead of waiting on the client's socket timeout.

Keys (all with a TTL): `<p>:job:<id>` (JSON record), `<p>:job:<id>:<kind>` (a blob: a list of
byte parts), `<p>:job:<id>:sizes` (hash kind -> bytes of each blob), `<p>:job:<id>:lease`,
`<p>:lock:<name>`, the lists `<p>:jobs:queue` and `<p>:jobs:running`, and the sets
`<p>:jobs:all` and `<p>:owner:<owner>:jobs` that quotas count over (stale ids are pruned as they
are counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import TypeVar, cast

from redis.asyncio import Redis
from redis.exceptions import TimeoutError as RedisTimeout

from .job_store import UNLIMITED, JobRecord, JobStore, Quota, file_parts, quota_problem

T = TypeVar("T")
BLOB_KINDS = ("input", "result:zip", "result:mp4", "result:npz")

_CLAIM = """
local id = redis.call('RPOPLPUSH', KEYS[1], KEYS[2])
if not id then return false end
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('SET', ARGV[1] .. id .. ':lease', ARGV[2], 'PX', ARGV[3])
return id
"""
_HEARTBEAT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
# KEYS: the owner's set, the set of all jobs. ARGV: "<p>:job:", id, record JSON, upload bytes,
# jobs per key, bytes per key, jobs, bytes, ttl ms. Counting and reserving in one script makes
# admission atomic across replicas. Returns {limit, held, ms until a finished job expires or -1}.
_ADMIT = """
local function tally(set)
  local jobs, bytes, wait = 0, 0, -1
  for _, id in ipairs(redis.call('SMEMBERS', set)) do
    local raw = redis.call('GET', ARGV[1] .. id)
    if not raw then
      redis.call('SREM', set, id)
    else
      local held = 0
      for _, n in ipairs(redis.call('HVALS', ARGV[1] .. id .. ':sizes')) do held = held + tonumber(n) end
      bytes = bytes + held
      local status = cjson.decode(raw)['status']
      if status == 'queued' or status == 'running' then
        jobs = jobs + 1
      elseif held > 0 then
        local ttl = redis.call('PTTL', ARGV[1] .. id)
        if ttl > 0 and (wait < 0 or ttl < wait) then wait = ttl end
      end
    end
  end
  return jobs, bytes, wait
end
local size = tonumber(ARGV[4])
local jobs, bytes, wait = tally(KEYS[1])
if jobs + 1 > tonumber(ARGV[5]) then return {'jobs_per_key', jobs, wait} end
if bytes + size > tonumber(ARGV[6]) then return {'bytes_per_key', bytes, wait} end
jobs, bytes, wait = tally(KEYS[2])
if jobs + 1 > tonumber(ARGV[7]) then return {'jobs', jobs, wait} end
if bytes + size > tonumber(ARGV[8]) then return {'bytes', bytes, wait} end
local job = ARGV[1] .. ARGV[2]
redis.call('SET', job, ARGV[3], 'PX', ARGV[9])
redis.call('HSET', job .. ':sizes', 'input', size)
redis.call('PEXPIRE', job .. ':sizes', ARGV[9])
for _, set in ipairs(KEYS) do
  redis.call('SADD', set, ARGV[2])
  redis.call('PEXPIRE', set, ARGV[9])
end
return {'ok', 0, -1}
"""


class RedisJobStore(JobStore):
    backend = "redis"

    def __init__(self, client: Redis, prefix: str = "vsod", ttl_s: float = 3600, timeout_s: float | None = None,
                 quota: Quota = UNLIMITED) -> None:
        super().__init__(ttl_s, quota)
        self.client, self.prefix, self.timeout_s = client, prefix, timeout_s
        self.queue_key, self.running_key = f"{prefix}:jobs:queue", f"{prefix}:jobs:running"
        self.all_key = f"{prefix}:jobs:all"
        self._claim = client.register_script(_CLAIM)
        self._heartbeat = client.register_script(_HEARTBEAT)
        self._admit = client.register_script(_ADMIT)

    def key(self, job_id: str, *suffix: str) -> str:
        return ":".join((self.prefix, "job", job_id, *suffix))

    def owner_key(self, owner: str) -> str:
        return f"{self.prefix}:owner:{owner}:jobs"

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl_s * 1000))

    async def _call(self, operation: Awaitable[T]) -> T:
        """One Redis round trip, bounded by `timeout_s` (a RedisError when it takes longer)."""
        if self.timeout_s is None:
            return await operation
        try:
            return await asyncio.wait_for(operation, self.timeout_s)
        except TimeoutError:
            raise RedisTimeout(f"Redis gave no answer within {self.timeout_s:g} s") from None

    async def get(self, job_id: str) -> JobRecord | None:
        data = await self._call(self.client.get(self.key(job_id)))
        return JobRecord.from_json(data) if data is not None else None

    async def save(self, record: JobRecord) -> bool:
        record.updated = time.time()
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.set(self.key(record.job_id), record.to_json(), px=self._ttl_ms, xx=True)  # never revive a deleted job
            pipe.pexpire(self.key(record.job_id, "sizes"), self._ttl_ms)
            written, _ = await self._call(pipe.execute())
        return bool(written)

    async def admit(self, record: JobRecord) -> None:
        quota = self.quota
        args: list[str | int] = [f"{self.prefix}:job:", record.job_id, record.to_json(), record.size,
                                 quota.jobs_per_key, quota.bytes_per_key, quota.jobs, quota.bytes, self._ttl_ms]
        reply, held, wait = await self._call(self._admit(keys=[self.owner_key(record.owner), self.all_key], args=args))
        limit = _text(reply)
        if limit != "ok":
            raise quota_problem(limit, quota, int(held), record.size, int(wait))

    async def delete(self, record: JobRecord) -> None:
        job_id = record.job_id
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.lrem(self.queue_key, 0, job_id)
            pipe.lrem(self.running_key, 0, job_id)
            pipe.delete(self.key(job_id), self.key(job_id, "lease"), self.key(job_id, "sizes"),
                        *(self.key(job_id, kind) for kind in BLOB_KINDS))
            pipe.srem(self.owner_key(record.owner), job_id)
            pipe.srem(self.all_key, job_id)
            await self._call(pipe.execute())

    async def enqueue(self, job_id: str, front: bool = False) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            # Workers pop from the right: LPUSH is the back of the line, RPUSH the front.
            (pipe.rpush if front else pipe.lpush)(self.queue_key, job_id)
            pipe.pexpire(self.queue_key, self._ttl_ms)  # an idle queue's jobs have all expired anyway
            await self._call(pipe.execute())

    async def claim(self, worker: str, lease_s: float) -> str | None:
        args: list[str | int] = [f"{self.prefix}:job:", worker, max(1, int(lease_s * 1000)), self._ttl_ms]
        job_id = await self._call(self._claim(keys=[self.queue_key, self.running_key], args=args))
        return None if job_id is None else _text(job_id)

    async def heartbeat(self, job_id: str, worker: str, lease_s: float) -> bool:
        args: list[str | int] = [worker, max(1, int(lease_s * 1000))]
        return bool(await self._call(self._heartbeat(keys=[self.key(job_id, "lease")], args=args)))

    async def release(self, job_id: str) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.lrem(self.running_key, 0, job_id)
            pipe.delete(self.key(job_id, "lease"), self.key(job_id, "input"))
            pipe.hdel(self.key(job_id, "sizes"), "input")
            await self._call(pipe.execute())

    async def give_back(self, job_id: str) -> None:
        async with self.client.pipeline(transaction=True) as pipe:  # one step: never both or neither listed
            pipe.lrem(self.running_key, 0, job_id)
            pipe.delete(self.key(job_id, "lease"))
            pipe.rpush(self.queue_key, job_id)  # the front of the line (workers pop from the right)
            pipe.pexpire(self.queue_key, self._ttl_ms)
            await self._call(pipe.execute())

    async def running_ids(self) -> list[str]:
        return [_text(item) for item in await self._call(self.client.lrange(self.running_key, 0, -1))]

    async def has_lease(self, job_id: str) -> bool:
        return bool(await self._call(self.client.exists(self.key(job_id, "lease"))))

    async def remove_running(self, job_id: str) -> bool:
        return bool(await self._call(self.client.lrem(self.running_key, 0, job_id)))

    async def put_blob(self, job_id: str, kind: str, source: Path | bytes) -> None:
        key = self.key(job_id, kind)
        partial = f"{key}:partial:{uuid.uuid4().hex}"  # renamed into place when whole
        size = 0
        try:
            async for part in file_parts(source):
                async with self.client.pipeline(transaction=False) as pipe:
                    pipe.rpush(partial, part)
                    pipe.pexpire(partial, self._ttl_ms)
                    await self._call(pipe.execute())
                size += len(part)
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.rename(partial, key)
                pipe.pexpire(key, self._ttl_ms)
                pipe.hset(self.key(job_id, "sizes"), kind, size)
                pipe.pexpire(self.key(job_id, "sizes"), self._ttl_ms)
                await self._call(pipe.execute())
        except BaseException:
            with contextlib.suppress(Exception):  # else it expires with its TTL
                await self._call(self.client.delete(partial))
            raise

    async def blob_size(self, job_id: str, kind: str) -> int | None:
        size = await self._call(self.client.hget(self.key(job_id, "sizes"), kind))
        if size is None or not await self._call(self.client.exists(self.key(job_id, kind))):
            return None
        return int(size)

    async def blob_parts(self, job_id: str, kind: str) -> AsyncIterator[bytes]:
        key = self.key(job_id, kind)
        count = await self._call(self.client.llen(key))
        for index in range(count):
            part = await self._call(self.client.lindex(key, index))
            if part is None:  # deleted (the job was cancelled) or expired while being read
                raise LookupError(f"job {job_id}: its {kind} went away while being read")
            yield cast(bytes, part)  # the client never decodes responses (decode_responses=False)

    async def delete_blob(self, job_id: str, kind: str) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(self.key(job_id, kind))
            pipe.hdel(self.key(job_id, "sizes"), kind)
            await self._call(pipe.execute())

    async def lock(self, name: str, ttl_s: float) -> bool:
        key = f"{self.prefix}:lock:{name}"
        return bool(await self._call(self.client.set(key, "1", px=max(1, int(ttl_s * 1000)), nx=True)))

    async def renew_lock(self, name: str, ttl_s: float) -> None:
        await self._call(self.client.set(f"{self.prefix}:lock:{name}", "1", px=max(1, int(ttl_s * 1000)), xx=True))

    async def unlock(self, name: str) -> None:
        await self._call(self.client.delete(f"{self.prefix}:lock:{name}"))

    async def queue_length(self) -> int:
        return int(await self._call(self.client.llen(self.queue_key)))

    async def ping(self) -> None:
        await self._call(self.client.ping())


def _text(value: bytes | str) -> str:
    """A Redis reply as text (the client returns bytes; redis-py's types allow either)."""
    return value.decode() if isinstance(value, bytes) else value
