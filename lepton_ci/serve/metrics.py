"""Prometheus metrics of the model server, summed over its worker processes.

Several workers each count their own requests; prometheus_client's multiprocess mode keeps every
worker's values in a shared directory (PROMETHEUS_MULTIPROC_DIR, set by the supervisor before any
worker imports prometheus_client) and sums them when scraped, so /metrics answers for the whole server
whichever worker takes the scrape. With one worker in-process (tests, library use) a private registry
is used instead. docs/monitoring/ builds its dashboard and alerts on exactly these names.
"""

from __future__ import annotations

import os
from typing import Any

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServerMetrics:
    """The server's metrics, or no-ops when prometheus_client is not installed."""

    def __init__(self, model: str, version: str, framework: str) -> None:
        self.model, self.version = model, version
        self.queue_now = self.in_flight_now = 0
        try:
            import prometheus_client as prom
        except ImportError:
            self.prom: Any = None
            return
        self.prom = prom
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        # Our own registry even in-process: two servers in one process (tests) must not share counters.
        self.registry = None if self.multiprocess else prom.CollectorRegistry()
        reg = self.registry  # None in multiprocess mode: values live in the shared files, not a registry
        self.requests = prom.Counter(
            "lepton_inference_requests",
            "Requests by model, version and HTTP status",
            ["model", "version", "status"],
            registry=reg,
        )
        self.latency = prom.Histogram(
            "lepton_inference_seconds",
            "Time from a request's headers to its response, in seconds",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.batch_size = prom.Histogram(
            "lepton_inference_batch_size", "Rows per model call", ["model"], buckets=BATCH_BUCKETS, registry=reg
        )
        self.queue_depth = prom.Gauge(
            "lepton_inference_queue_depth",
            "Requests waiting for the model",
            ["model"],
            multiprocess_mode="livesum",
            registry=reg,
        )
        self.in_flight = prom.Gauge(
            "lepton_inference_in_flight",
            "Inference requests being handled",
            ["model"],
            multiprocess_mode="livesum",
            registry=reg,
        )
        info = prom.Gauge(
            "lepton_model_info",
            "The model version served (always 1)",
            ["model", "version", "framework"],
            multiprocess_mode="max",
            registry=reg,
        )
        info.labels(model, version, framework).set(1)
        self._requests: dict[int, Any] = {}  # status -> bound child: labels() costs a dict lookup and a lock per call
        self._latency = self.latency.labels(model, version)
        self._batch = self.batch_size.labels(model)
        self._queue = self.queue_depth.labels(model)
        self._in_flight = self.in_flight.labels(model)

    def observe(self, status: int, seconds: float) -> None:
        if self.prom is None:
            return
        child = self._requests.get(status)
        if child is None:
            child = self._requests[status] = self.requests.labels(self.model, self.version, str(status))
        child.inc()
        self._latency.observe(seconds)

    def batch(self, rows: int) -> None:
        if self.prom is not None:
            self._batch.observe(rows)

    def queued(self, depth: int) -> None:
        self.queue_now = depth

    def in_flight_add(self, delta: int) -> None:
        self.in_flight_now += delta
        if self.in_flight_now == 0:  # idle: the gauges say so exactly
            self.flush()

    def flush(self) -> None:
        """Write the two live gauges. Requests only count in plain ints (a gauge write takes a lock, and in
        multiprocess mode an mmap write: four per request were 4% of a request's CPU); the batcher
        flushes once per batch, a scrape and an idle server flush too."""
        if self.prom is not None:
            self._queue.set(self.queue_now)
            self._in_flight.set(self.in_flight_now)

    def render(self) -> tuple[bytes, str] | None:
        """The exposition text (all workers' values when multiprocess), or None without prometheus_client."""
        if self.prom is None:
            return None
        self.flush()
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = self.prom.CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return self.prom.generate_latest(registry), self.prom.CONTENT_TYPE_LATEST
        return self.prom.generate_latest(self.registry), self.prom.CONTENT_TYPE_LATEST


def worker_exited(pid: int) -> None:
    """Drop a dead worker's live gauges (its counters stay: they are history)."""
    if not os.environ.get(MULTIPROC_ENV):
        return
    try:
        from prometheus_client import multiprocess
    except ImportError:
        return
    multiprocess.mark_process_dead(pid)
