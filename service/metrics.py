"""Prometheus metrics for one app: requests, frame latency, sessions, drops, queue depth, jobs.

Each app gets its own `CollectorRegistry` (not the global one), so several apps in one process,
as in tests, never collide over metric names.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Frame latencies on a CPU run from a few ms (tiny models) to a few hundred (large frames).
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "vsod_http_requests", "HTTP requests by route and status.", ["method", "route", "status"], registry=r
        )
        self.request_seconds = Histogram("vsod_http_request_seconds", "HTTP request duration.", ["route"], registry=r)
        self.frame_seconds = Histogram(
            "vsod_frame_latency_seconds", "A frame's time from arrival to mask, by source.", ["source"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.frames = Counter("vsod_frames", "Frames run through the model, by source.", ["source"], registry=r)
        self.dropped_frames = Counter(
            "vsod_dropped_frames", "Stream frames replaced by a newer one before processing.", registry=r
        )
        self.rate_limited_frames = Counter(
            "vsod_rate_limited_frames", "Stream frames dropped unread for exceeding VSOD_MAX_STREAM_FPS "
            "(also counted in vsod_dropped_frames).", registry=r
        )
        self.active_sessions = Gauge("vsod_active_sessions", "Open WebSocket streams in this process.", registry=r)
        self.queue_depth = Gauge("vsod_engine_queue_depth", "Operations waiting for the inference worker.", registry=r)
        self.stream_errors = Counter("vsod_stream_errors", "Error messages sent on streams, by code.", ["code"], registry=r)
        self.jobs = Counter("vsod_clip_jobs", "Clip jobs by outcome.", ["outcome"], registry=r)
        self.state_restarts = Counter(
            "vsod_state_restarts", "Sessions whose stored state was unusable and restarted.", registry=r
        )

    def track_queue(self, depth: Callable[[], float]) -> None:
        self.queue_depth.set_function(depth)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetrics:
    """ASGI middleware counting HTTP requests by route template (not raw path: ids stay out of labels)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.request_seconds.labels(route).observe(time.perf_counter() - start)
