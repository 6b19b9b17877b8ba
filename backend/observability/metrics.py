"""Prometheus metrics of the API process.

Two kinds of series:
- events counted by this process as they happen: HTTP requests and latency by route template,
  chat completions (rollouts), tokens and latency by agent, feedback, engine errors;
- state read from the database at scrape time (cached `metrics_db_cache_s`): jobs by kind and
  status with their durations, reward and KL of each agent's last training run, and the live
  prompt/adapter version of each agent. Every API replica reports the same values for these;
  aggregate them with `max`, not `sum`.

Per-agent series are labelled `tenant` (the tenant's id) and `agent` (the slug): one series
per agent, so their number grows with the agents, not with traffic. They are shown only to a
scrape that sends `FASTSLOW_METRICS_TOKEN`; an anonymous scrape (development without a token)
gets the other series only.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import ColumnElement, Connection, Float, cast, event, func, select
from sqlalchemy.orm import Mapper, Session

from backend.adapters.models import AdapterVersion
from backend.agents.models import Agent
from backend.db import Database
from backend.jobs.models import Job, JobKind, JobStatus
from backend.observability.multiprocess import multiprocess_enabled
from backend.prompts.models import PromptVersion
from backend.rollouts.models import Feedback

logger = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

HTTP_REQUESTS = Counter(
    "fastslow_http_requests",
    "HTTP requests by method, route template and status code.",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "fastslow_http_request_duration_seconds",
    "Time to answer an HTTP request, to the last byte of the body (streams included).",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
ROLLOUTS = Counter(
    "fastslow_rollouts",
    "Chat completions stored as rollouts, by agent and finish reason "
    "(stop, length, cancelled, error).",
    ["tenant", "agent", "finish_reason"],
)
CHAT_LATENCY = Histogram(
    "fastslow_chat_completion_duration_seconds",
    "Time from a chat request to its stored rollout, by agent.",
    ["tenant", "agent", "stream"],
    buckets=LATENCY_BUCKETS,
)
TOKENS = Counter(
    "fastslow_tokens",
    "Tokens of served chat completions, by agent and kind (prompt, completion).",
    ["tenant", "agent", "kind"],
)
FEEDBACK = Counter(
    "fastslow_feedback",
    "Ratings stored (replays of an Idempotency-Key are not counted), by agent.",
    ["tenant", "agent"],
)
ENGINE_ERRORS = Counter(
    "fastslow_engine_errors",
    "Failed engine calls by operation and error (unavailable, failed, adapter_load).",
    ["operation", "error"],
)


def record_rollout(
    *,
    tenant: str,
    agent: str,
    finish_reason: str,
    stream: bool,
    seconds: float,
    prompt_tokens: int,
    completion_tokens: int,
) -> None:
    ROLLOUTS.labels(tenant, agent, finish_reason).inc()
    CHAT_LATENCY.labels(tenant, agent, str(stream).lower()).observe(seconds)
    TOKENS.labels(tenant, agent, "prompt").inc(prompt_tokens)
    TOKENS.labels(tenant, agent, "completion").inc(completion_tokens)


def _count_feedback(_: Mapper[Feedback], connection: Connection, feedback: Feedback) -> None:
    # Counted where the row is written, so every path that stores a rating is seen.
    slug = connection.execute(select(Agent.slug).where(Agent.id == feedback.agent_id)).scalar()
    FEEDBACK.labels(str(feedback.tenant_id), slug or "").inc()


event.listen(Feedback, "after_insert", _count_feedback)


# -- state from the database -----------------------------------------------------------------


def _seconds_between(session: Session, start: Any, end: Any) -> ColumnElement[float]:
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.extract("epoch", end - start), Float)
    return (func.julianday(end) - func.julianday(start)) * 86400.0


def _last_number(metrics: dict[str, Any], key: str, curve: str) -> float | None:
    """A run's final value: the assessment's `key`, else the last point of `curves[curve]`."""
    value = metrics.get(key)
    if isinstance(value, int | float):
        return float(value)
    points = [p for p in (metrics.get("curves") or {}).get(curve, []) if p is not None]
    return float(points[-1]) if points else None


def database_metrics(session: Session) -> list[Metric]:
    """The platform's state as gauges: one query per family, each bounded by the number of
    agents or by (kind, status) pairs."""
    jobs = GaugeMetricFamily("fastslow_jobs", "Jobs by kind and status.", labels=["kind", "status"])
    counts = session.execute(
        select(Job.kind, Job.status, func.count()).group_by(Job.kind, Job.status)
    )
    for kind, status, count in counts:
        jobs.add_metric([kind, str(status)], count)

    durations = SummaryMetricFamily(
        "fastslow_job_duration_seconds",
        "Run time of finished jobs (claimed to finished), by kind and outcome.",
        labels=["kind", "status"],
    )
    seconds = _seconds_between(session, Job.started_at, Job.finished_at)
    finished = session.execute(
        select(Job.kind, Job.status, func.count(), func.coalesce(func.sum(seconds), 0.0))
        .where(Job.started_at.is_not(None), Job.finished_at.is_not(None))
        .group_by(Job.kind, Job.status)
    )
    for kind, status, count, total in finished:
        durations.add_metric([kind, str(status)], count_value=count, sum_value=float(total))

    labels = ["tenant", "agent"]
    prompt = GaugeMetricFamily(
        "fastslow_agent_live_prompt_version",
        "The prompt version serving each agent.",
        labels=labels,
    )
    adapter = GaugeMetricFamily(
        "fastslow_agent_live_adapter_version",
        "The adapter version serving each agent (0: the base model).",
        labels=labels,
    )
    slugs: dict[uuid.UUID, list[str]] = {}
    live = (
        select(Agent.id, Agent.tenant_id, Agent.slug, PromptVersion.version, AdapterVersion.version)
        .outerjoin(PromptVersion, PromptVersion.id == Agent.live_prompt_version_id)
        .outerjoin(AdapterVersion, AdapterVersion.id == Agent.live_adapter_version_id)
    )
    for agent_id, tenant_id, slug, prompt_version, adapter_version in session.execute(live):
        slugs[agent_id] = [str(tenant_id), slug]
        prompt.add_metric(slugs[agent_id], prompt_version or 0)
        adapter.add_metric(slugs[agent_id], adapter_version or 0)

    reward = GaugeMetricFamily(
        "fastslow_last_training_reward",
        "Validation reward of each agent's last finished training run's candidate adapter.",
        labels=labels,
    )
    kl = GaugeMetricFamily(
        "fastslow_last_training_kl",
        "KL to the base model of each agent's last finished training run's candidate adapter.",
        labels=labels,
    )
    ranked = (
        select(
            Job.agent_id,
            Job.metrics,
            func.row_number()
            .over(partition_by=Job.agent_id, order_by=Job.finished_at.desc())
            .label("rank"),
        )
        .where(Job.kind == JobKind.TRAIN, Job.status == JobStatus.SUCCEEDED)
        .subquery()
    )
    for agent_id, metrics in session.execute(
        select(ranked.c.agent_id, ranked.c.metrics).where(ranked.c.rank == 1)
    ):
        if agent_id not in slugs:
            continue
        if (value := _last_number(metrics or {}, "candidate_reward", "reward")) is not None:
            reward.add_metric(slugs[agent_id], value)
        if (value := _last_number(metrics or {}, "kl_to_base", "kl")) is not None:
            kl.add_metric(slugs[agent_id], value)
    return [jobs, durations, prompt, adapter, reward, kl]


class DatabaseCollector(Collector):
    """Reads `database_metrics` at most every `cache_s`; a database outage leaves the last
    values out rather than failing the scrape (the process's own series still matter then)."""

    def __init__(self, database: Callable[[], Database], cache_s: float) -> None:
        self.database, self.cache_s = database, cache_s
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Metric]] | None = None

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= self.cache_s:
                up = GaugeMetricFamily(
                    "fastslow_database_metrics_up",
                    "1 if the database answered the last metrics query.",
                )
                try:
                    with self.database().session() as session:
                        families = database_metrics(session)
                    up.add_metric([], 1)
                except Exception as exc:
                    logger.warning("metrics: the database did not answer: %s", exc)
                    families = []
                    up.add_metric([], 0)
                self._cached = (now, [*families, up])
            yield from self._cached[1]


TENANT_LABEL = "tenant"


class _WithoutTenants(Collector):
    """A registry's series without those labelled with a tenant: what an anonymous scrape
    may see (request counts by route, engine errors, jobs by kind), never who the tenants
    are or what their agents are called."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.collect():
            samples = [s for s in family.samples if TENANT_LABEL not in s.labels]
            if samples:
                # A copy: the database's families are cached and shown to token scrapes too.
                kept = copy.copy(family)
                kept.samples = samples
                yield kept


@dataclass
class Exposition:
    """What `/metrics` answers: this process's series (all processes' in multiprocess mode)
    and the database's."""

    database: DatabaseCollector

    def render(self, *, tenants: bool = True) -> bytes:
        """The exposition; `tenants=False` leaves out every series labelled by tenant."""
        registries: Iterable[CollectorRegistry]
        if multiprocess_enabled():
            process = CollectorRegistry()
            MultiProcessCollector(process)  # type: ignore[no-untyped-call]
            registries = (process,)
        else:
            registries = (REGISTRY,)
        state = CollectorRegistry(auto_describe=False)
        state.register(self.database)
        parts: list[CollectorRegistry] = [*registries, state]
        if not tenants:
            filtered = []
            for registry in parts:
                without = CollectorRegistry(auto_describe=False)
                without.register(_WithoutTenants(registry))
                filtered.append(without)
            parts = filtered
        return b"".join(generate_latest(r) for r in parts)
