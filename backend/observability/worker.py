"""Prometheus metrics of a Celery worker (`fastslow worker`), served on
`FASTSLOW_WORKER_METRICS_PORT`.

Jobs run in the worker's forked child processes; `fastslow worker` turns on prometheus_client's
multiprocess mode before anything imports it, and the HTTP server in the parent adds up what
the children wrote.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery.signals import worker_process_shutdown
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client import multiprocess as prometheus_multiprocess

from backend.observability.multiprocess import multiprocess_enabled

JOB_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800)

JOBS = Counter(
    "fastslow_worker_jobs",
    "Jobs this worker ran to an end, by kind and outcome (succeeded, failed, cancelled).",
    ["kind", "outcome"],
)
JOB_DURATION = Histogram(
    "fastslow_worker_job_duration_seconds",
    "Run time of the jobs this worker ran, by kind and outcome.",
    ["kind", "outcome"],
    buckets=JOB_BUCKETS,
)
JOBS_RUNNING = Gauge(
    "fastslow_worker_jobs_running",
    "Jobs running on this worker now, by kind.",
    ["kind"],
    multiprocess_mode="livesum",
)


class JobObservation:
    """One job's run: counted as running until `done(outcome)`."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.started = time.perf_counter()
        JOBS_RUNNING.labels(kind).inc()

    def done(self, outcome: str) -> None:
        JOBS_RUNNING.labels(self.kind).dec()
        JOBS.labels(self.kind, outcome).inc()
        JOB_DURATION.labels(self.kind, outcome).observe(time.perf_counter() - self.started)


def serve_worker_metrics(port: int) -> None:
    """Serve the metrics of this worker and its children on `port` (all interfaces)."""
    registry = CollectorRegistry()
    if multiprocess_enabled():
        prometheus_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    start_http_server(port, registry=registry)


@worker_process_shutdown.connect  # type: ignore[untyped-decorator]
def _forget_child(**_: Any) -> None:
    # A child's `livesum` gauge values must not outlive it.
    if multiprocess_enabled():
        prometheus_multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
