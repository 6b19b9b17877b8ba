"""Per-tenant rate limits (requests per minute), token quotas (prompt and generated tokens per
day) and job budgets (evaluation, optimisation and training jobs started per day).

The counters live in the database: it is the one store that every API replica shares on every
deployment (the embedded one has no Redis), so a limit holds however many replicas serve. Each
tenant has one row per kind and fixed window, and a request adds to it with a single atomic
`INSERT ... ON CONFLICT DO UPDATE ... RETURNING` (PostgreSQL and SQLite alike): no lost updates,
no read-modify-write race. A fixed window admits at most twice the limit across a window edge,
which is the usual price for one row per window.

Requests are counted before the route runs; tokens (the prompt the engine read and what it
produced) are charged after generation from the engine's own counts, in the transaction that
stores the rollout. A request is let through while the window's tokens are under the quota, so
concurrent requests can overshoot it by at most their prompt and `max_tokens` each. A job is
charged in the transaction that creates it, with an upsert that adds only while the budget has
room, so concurrent starts never overshoot the budget.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from backend.audit.service import Actor, add_event
from backend.config import Settings
from backend.errors import QuotaExceeded, RateLimited
from backend.limits.models import TenantLimits, UsageCounter
from backend.tenants.service import get_tenant

REQUESTS = "requests"
TOKENS = "tokens"
JOBS = "jobs"
REQUEST_WINDOW_S = 60
TOKEN_WINDOW_S = 86_400
JOB_WINDOW_S = 86_400


@dataclass(frozen=True)
class Limits:
    """Limits in force; 0 means no limit."""

    requests_per_minute: int
    tokens_per_day: int
    jobs_per_day: int = 0


def default_limits(settings: Settings) -> Limits:
    """The deployment's defaults, for tenants without their own values."""
    return Limits(
        requests_per_minute=settings.tenant_requests_per_minute,
        tokens_per_day=settings.tenant_tokens_per_day,
        jobs_per_day=settings.tenant_jobs_per_day,
    )


@dataclass(frozen=True)
class Usage:
    """One limit of a tenant and how much of it the current window has used."""

    limit: int
    used: int
    window_s: int
    resets_at: datetime
    overridden: bool  # the tenant has its own value (else the default applies)


@dataclass(frozen=True)
class TenantUsage:
    tenant_id: uuid.UUID
    requests_per_minute: Usage
    tokens_per_day: Usage
    jobs_per_day: Usage


def _window_start(now: float, length_s: int) -> int:
    return int(now // length_s) * length_s


def _retry_after(now: float, start: int, length_s: int) -> int:
    return max(1, math.ceil(start + length_s - now))


def _overrides(session: Session, tenant_id: uuid.UUID) -> TenantLimits | None:
    return session.get(TenantLimits, tenant_id)


def effective_limits(session: Session, *, tenant_id: uuid.UUID, defaults: Limits) -> Limits:
    row = _overrides(session, tenant_id)
    rpm = row.requests_per_minute if row is not None else None
    tpd = row.tokens_per_day if row is not None else None
    jpd = row.jobs_per_day if row is not None else None
    return Limits(
        requests_per_minute=defaults.requests_per_minute if rpm is None else rpm,
        tokens_per_day=defaults.tokens_per_day if tpd is None else tpd,
        jobs_per_day=defaults.jobs_per_day if jpd is None else jpd,
    )


def _add(session: Session, *, tenant_id: uuid.UUID, kind: str, start: int, amount: int) -> int:
    """Add `amount` to the window's counter and return its new value (one statement)."""
    dialect = session.get_bind().dialect.name
    insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert(UsageCounter)
        .values(tenant_id=tenant_id, kind=kind, window_start=start, used=amount)
        .on_conflict_do_update(
            index_elements=["tenant_id", "kind", "window_start"],
            set_={"used": UsageCounter.used + amount},
        )
        .returning(UsageCounter.used)
    )
    used = int(session.execute(statement).scalar_one())
    if used == amount:
        # The first count of a new window: the tenant's older windows are no longer read.
        session.execute(
            delete(UsageCounter).where(
                UsageCounter.tenant_id == tenant_id,
                UsageCounter.kind == kind,
                UsageCounter.window_start < start,
            )
        )
    return used


def _used(session: Session, *, tenant_id: uuid.UUID, kind: str, start: int) -> int:
    query = select(UsageCounter.used).where(
        UsageCounter.tenant_id == tenant_id,
        UsageCounter.kind == kind,
        UsageCounter.window_start == start,
    )
    return int(session.scalar(query) or 0)


def count_request(
    session: Session, *, tenant_id: uuid.UUID, defaults: Limits, now: float | None = None
) -> None:
    """Count one request of the tenant (and commit); RateLimited once it is over the limit.

    Nothing is counted (or written) while the tenant has no request limit."""
    limit = effective_limits(session, tenant_id=tenant_id, defaults=defaults).requests_per_minute
    if not limit:
        return
    now = time.time() if now is None else now
    start = _window_start(now, REQUEST_WINDOW_S)
    used = _add(session, tenant_id=tenant_id, kind=REQUESTS, start=start, amount=1)
    session.commit()
    if used > limit:
        raise RateLimited(
            f"rate limit reached: this tenant may send {limit} requests per minute",
            retry_after_s=_retry_after(now, start, REQUEST_WINDOW_S),
        )


def check_token_quota(
    session: Session, *, tenant_id: uuid.UUID, defaults: Limits, now: float | None = None
) -> None:
    """QuotaExceeded if the tenant has used up its tokens for the current window."""
    limit = effective_limits(session, tenant_id=tenant_id, defaults=defaults).tokens_per_day
    if not limit:
        return
    now = time.time() if now is None else now
    start = _window_start(now, TOKEN_WINDOW_S)
    if _used(session, tenant_id=tenant_id, kind=TOKENS, start=start) >= limit:
        raise QuotaExceeded(
            f"token quota used up: this tenant may use {limit} tokens per day (UTC), "
            "prompt and completion tokens together",
            retry_after_s=_retry_after(now, start, TOKEN_WINDOW_S),
        )


def charge_tokens(
    session: Session, *, tenant_id: uuid.UUID, tokens: int, now: float | None = None
) -> None:
    """Add tokens (prompt and generated) to the tenant's current window. The caller commits,
    so the charge lands with the rollout that used them (exactly once)."""
    if tokens <= 0:
        return
    now = time.time() if now is None else now
    start = _window_start(now, TOKEN_WINDOW_S)
    _add(session, tenant_id=tenant_id, kind=TOKENS, start=start, amount=tokens)


def charge_job(
    session: Session, *, tenant_id: uuid.UUID, defaults: Limits, now: float | None = None
) -> None:
    """Count one job against the tenant's daily job budget, in the caller's transaction (the
    one that creates the job, so a job that is not created is not charged). QuotaExceeded,
    with nothing counted, once the budget is used up."""
    limit = effective_limits(session, tenant_id=tenant_id, defaults=defaults).jobs_per_day
    if not limit:
        return
    now = time.time() if now is None else now
    start = _window_start(now, JOB_WINDOW_S)
    dialect = session.get_bind().dialect.name
    insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # Adds only while there is room: concurrent starts (on any replica) cannot overshoot.
    statement = (
        insert(UsageCounter)
        .values(tenant_id=tenant_id, kind=JOBS, window_start=start, used=1)
        .on_conflict_do_update(
            index_elements=["tenant_id", "kind", "window_start"],
            set_={"used": UsageCounter.used + 1},
            where=UsageCounter.used < limit,
        )
        .returning(UsageCounter.used)
    )
    used = session.execute(statement).scalar_one_or_none()
    if used is None:
        raise QuotaExceeded(
            f"job budget used up: this tenant may start {limit} evaluation, optimisation "
            "and training jobs per day (UTC)",
            retry_after_s=_retry_after(now, start, JOB_WINDOW_S),
        )
    if used == 1:
        session.execute(
            delete(UsageCounter).where(
                UsageCounter.tenant_id == tenant_id,
                UsageCounter.kind == JOBS,
                UsageCounter.window_start < start,
            )
        )


def refund_job(session: Session, *, tenant_id: uuid.UUID, charged_at: float) -> None:
    """Give back the charge of a job that never ran (the broker refused it), so an outage
    does not use up the budget of beat's retries. The caller commits."""
    start = _window_start(charged_at, JOB_WINDOW_S)
    session.execute(
        update(UsageCounter)
        .where(
            UsageCounter.tenant_id == tenant_id,
            UsageCounter.kind == JOBS,
            UsageCounter.window_start == start,
            UsageCounter.used > 0,
        )
        .values(used=UsageCounter.used - 1)
    )


def tenant_usage(
    session: Session, *, tenant_id: uuid.UUID, defaults: Limits, now: float | None = None
) -> TenantUsage:
    """The tenant's limits in force and the current windows' usage."""
    now = time.time() if now is None else now
    row = _overrides(session, tenant_id)
    limits = effective_limits(session, tenant_id=tenant_id, defaults=defaults)

    def usage(kind: str, limit: int, length_s: int, overridden: bool) -> Usage:
        start = _window_start(now, length_s)
        return Usage(
            limit=limit,
            used=_used(session, tenant_id=tenant_id, kind=kind, start=start),
            window_s=length_s,
            resets_at=datetime.fromtimestamp(start + length_s, UTC),
            overridden=overridden,
        )

    return TenantUsage(
        tenant_id=tenant_id,
        requests_per_minute=usage(
            REQUESTS,
            limits.requests_per_minute,
            REQUEST_WINDOW_S,
            row is not None and row.requests_per_minute is not None,
        ),
        tokens_per_day=usage(
            TOKENS,
            limits.tokens_per_day,
            TOKEN_WINDOW_S,
            row is not None and row.tokens_per_day is not None,
        ),
        jobs_per_day=usage(
            JOBS,
            limits.jobs_per_day,
            JOB_WINDOW_S,
            row is not None and row.jobs_per_day is not None,
        ),
    )


def set_limits(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    requests_per_minute: int | None,
    tokens_per_day: int | None,
    actor: Actor,
    jobs_per_day: int | None = None,
) -> None:
    """Set (or, with None, clear) the tenant's own limits; audited in the same transaction.
    Every replica applies them from the next request on."""
    get_tenant(session, tenant_id)
    row = _overrides(session, tenant_id)
    if row is None:
        row = TenantLimits(tenant_id=tenant_id)
        session.add(row)
    before = {
        "requests_per_minute": row.requests_per_minute,
        "tokens_per_day": row.tokens_per_day,
        "jobs_per_day": row.jobs_per_day,
    }
    row.requests_per_minute = requests_per_minute
    row.tokens_per_day = tokens_per_day
    row.jobs_per_day = jobs_per_day
    after = {
        "requests_per_minute": requests_per_minute,
        "tokens_per_day": tokens_per_day,
        "jobs_per_day": jobs_per_day,
    }
    add_event(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="tenant.limits.set",
        target=f"tenant:{tenant_id}",
        details={"before": before, "after": after},
    )
    session.commit()
