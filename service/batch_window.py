"""Which sessions a micro-batch waits for: those streaming lately whose next frame is due.

The engine's worker takes every frame already waiting; when fewer sessions are in the batch than
have been batched lately (`ACTIVE_S`), it may wait up to its window for theirs. It waits only for a
session whose rhythm is unknown yet, or whose next frame (its last arrival plus its usual gap) falls
due before the window closes: sessions in lockstep with their masks fall due together and share a
pass; cameras sending at their own phases rarely do, and waiting for them would only add latency
(bench/concurrency.py --pace). A lone stream never waits: there is nobody to wait for.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

ACTIVE_S = 1.0  # a session batched this recently counts as streaming


class BatchWindow:
    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.seen: dict[str, float] = {}  # session -> when its last frame was batched
        self.arrivals: dict[str, tuple[float, float | None]] = {}  # session -> last arrival, usual gap

    def arrived(self, session_id: str) -> None:
        """A frame of the session reached the engine: learn its rhythm."""
        now = time.perf_counter()
        last, gap = self.arrivals.get(session_id, (None, None))
        if last is not None:  # a running average, so one late frame does not throw the rhythm off
            gap = now - last if gap is None else (gap + now - last) / 2
        self.arrivals[session_id] = (now, gap)

    def batched(self, session_ids: Iterable[str]) -> None:
        """These sessions' frames go into a forward pass now."""
        self.forget_idle()
        now = time.perf_counter()
        for sid in session_ids:
            self.seen[sid] = now

    def worth_waiting(self, batched: set[str], deadline: float) -> bool:
        """Whether a batch holding `batched` should wait (until `deadline`) for another session's frame."""
        return len(batched) < self.active_sessions() and self._due(batched, deadline)

    def active_sessions(self) -> int:
        """Sessions batched in the last ACTIVE_S seconds (at most a batch's worth)."""
        self.forget_idle()
        return min(len(self.seen), self.batch_size)

    def forget_idle(self) -> None:
        """Drop what is known of sessions idle for ACTIVE_S, so the maps stay bounded."""
        cutoff = time.perf_counter() - ACTIVE_S
        for sid in [sid for sid, seen in self.seen.items() if seen < cutoff]:
            del self.seen[sid]
        for sid in [sid for sid, (last, _) in self.arrivals.items() if last < cutoff]:
            del self.arrivals[sid]

    def _due(self, batched: set[str], deadline: float) -> bool:
        now = time.perf_counter()
        for sid in self.seen:
            if sid in batched:
                continue
            last, gap = self.arrivals.get(sid, (None, None))
            if last is None or gap is None or now - gap / 2 <= last + gap <= deadline:
                return True
        return False
