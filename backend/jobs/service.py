"""Jobs: created by the API, run by workers, watched by people.

What a job's kind, parameters and messages are is the contract's (backend/jobs/contract.py);
`start_job` refuses parameters the contract does not accept. Learning code sees the job
system only as a `JobReporter` (the contract's protocol; `DatabaseReporter` here), so it runs
the same with or without Celery.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from celery import Celery
from pydantic import BaseModel
from sqlalchemy import ColumnElement, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.db import Database, utcnow
from backend.errors import Conflict, NotFound, QuotaExceeded
from backend.jobs.contract import JobCancelled, stored_params, validate_params
from backend.jobs.models import Job, JobKind, JobStatus
from backend.jobs.queue import dispatch_job
from backend.limits.service import Limits, charge_job, refund_job

LOG_TAIL_CHARS = 8_000
# Kinds that checkpoint and can resume after their worker died, and how often they may try.
RESUMABLE_KINDS = frozenset({JobKind.TRAIN})
# Kinds that run one at a time per agent: every job kind, so one tenant cannot fill the
# workers with parallel runs of one agent.
EXCLUSIVE_KINDS = frozenset({JobKind.EVALUATE, JobKind.OPTIMIZE, JobKind.TRAIN})
MAX_ATTEMPTS = 3


def create_job(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    agent_id: uuid.UUID | None,
    kind: str,
    params: dict[str, Any],
    created_by: uuid.UUID | None,
    exclusive: bool = False,
    limits: Limits | None = None,
) -> Job:
    """Create a queued job. `exclusive`: at most one queued or running job of this kind per
    agent; a second one is a Conflict naming the first. The lock is the job row itself, so it
    survives worker crashes and is released when the job ends (or is reaped). `limits`: the
    job is charged to the tenant's daily job budget in the same transaction (QuotaExceeded
    once it is used up; a job refused as a duplicate is not charged)."""
    lock_key = f"{kind}:{agent_id}" if exclusive else None
    if limits is not None:
        try:
            charge_job(session, tenant_id=tenant_id, defaults=limits)
        except QuotaExceeded:
            session.rollback()
            raise
    job = Job(
        tenant_id=tenant_id,
        agent_id=agent_id,
        kind=kind,
        params=params,
        created_by=created_by,
        lock_key=lock_key,
    )
    session.add(job)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        holder = session.scalar(select(Job).where(Job.lock_key == lock_key))
        detail = f" (job {holder.id}, {holder.status})" if holder is not None else ""
        raise Conflict(
            f"a {kind} job for this agent is already queued or running{detail}"
        ) from None
    return job


def ran_or_will_run() -> ColumnElement[bool]:
    """Jobs that count as an agent's last run. One that failed before any worker started it
    (the broker refused it, or its message was lost) has not used the data it was started
    for, so the trigger (fast loop) or schedule (slow loop) tries again once the broker is
    back."""
    return ~((Job.status == JobStatus.FAILED) & Job.started_at.is_(None))


def start_job(
    session: Session,
    celery: Celery,
    *,
    tenant_id: uuid.UUID,
    agent_id: uuid.UUID | None,
    kind: str,
    params: BaseModel | Mapping[str, Any],
    limits: Limits,
    created_by: uuid.UUID | None = None,
    exclusive: bool = False,
) -> Job:
    """Create a job, charged to the tenant's daily job budget (`limits`: the deployment's
    defaults; QuotaExceeded over it), and send it to the workers; if the broker refuses, the
    job is failed (its lock released, its charge given back) before the error propagates.
    `params` must be what the contract accepts for `kind` (Invalid naming the field, before
    anything is charged or stored). Kinds in EXCLUSIVE_KINDS are always exclusive."""
    checked = validate_params(kind, params)
    job = create_job(
        session,
        tenant_id=tenant_id,
        agent_id=agent_id,
        kind=kind,
        params=stored_params(checked),
        created_by=created_by,
        exclusive=exclusive or kind in EXCLUSIVE_KINDS,
        limits=limits,
    )
    try:
        dispatch_job(celery, job_id=job.id, kind=job.kind)
    except Exception as exc:
        fail_job(session, job_id=job.id, error=str(exc))
        refund_job(session, tenant_id=tenant_id, charged_at=job.created_at.timestamp())
        session.commit()
        raise
    session.refresh(job)
    return job


def get_job(session: Session, *, tenant_id: uuid.UUID, job_id: uuid.UUID) -> Job:
    job = session.scalar(select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id))
    if job is None:
        raise NotFound(f"job {job_id} not found")
    return job


def list_jobs(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    agent_id: uuid.UUID | None = None,
    kind: str | None = None,
    status: JobStatus | None = None,
    limit: int = 50,
) -> list[Job]:
    query = select(Job).where(Job.tenant_id == tenant_id)
    if agent_id is not None:
        query = query.where(Job.agent_id == agent_id)
    if kind is not None:
        query = query.where(Job.kind == kind)
    if status is not None:
        query = query.where(Job.status == status)
    return list(session.scalars(query.order_by(Job.created_at.desc()).limit(limit)))


def claim_job(session: Session, *, job_id: uuid.UUID) -> Job | None:
    """Claim a queued job for this worker; None if it is gone, finished or already claimed
    (a redelivered message must not run a job twice)."""
    now = utcnow()
    claimed = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
        .values(
            status=JobStatus.RUNNING,
            started_at=now,
            heartbeat_at=now,
            attempts=Job.attempts + 1,
        )
    )
    session.commit()
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return session.get(Job, job_id)


def cancel_job(session: Session, *, job_id: uuid.UUID, reason: str) -> None:
    _finish(session, job_id, JobStatus.CANCELLED, error=reason)


def fail_job(session: Session, *, job_id: uuid.UUID, error: str) -> None:
    _finish(session, job_id, JobStatus.FAILED, error=error[:10_000])


def finish_job(
    session: Session, *, job_id: uuid.UUID, result: dict[str, Any], metrics: dict[str, Any]
) -> None:
    _finish(session, job_id, JobStatus.SUCCEEDED, result=result, metrics=metrics)


def _finish(session: Session, job_id: uuid.UUID, status: JobStatus, **values: Any) -> None:
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
        .values(status=status, finished_at=utcnow(), lock_key=None, **values)
    )
    session.commit()


@dataclass(frozen=True)
class Reaped:
    failed: int
    requeued: list[tuple[uuid.UUID, str]]  # (job id, kind): to dispatch again


def reap_stale_jobs(
    session: Session, *, timeout: timedelta, queued_timeout: timedelta | None = None
) -> Reaped:
    """Deal with jobs whose worker died: a resumable one (training resumes from its last
    checkpoint) goes back to the queue, up to MAX_ATTEMPTS claims; others are failed. Queued
    jobs no worker took within `queued_timeout` (their message was lost) are failed too."""
    failed = 0
    if queued_timeout is not None:
        never = session.execute(
            update(Job)
            .where(Job.status == JobStatus.QUEUED, Job.created_at < utcnow() - queued_timeout)
            .values(
                status=JobStatus.FAILED,
                finished_at=utcnow(),
                lock_key=None,
                error=f"never started: no worker took it within {queued_timeout}",
            )
        )
        failed += int(never.rowcount)  # type: ignore[attr-defined]
    cutoff = utcnow() - timeout
    stale = session.execute(
        select(Job.id, Job.kind, Job.attempts).where(
            Job.status == JobStatus.RUNNING, Job.heartbeat_at < cutoff
        )
    ).all()
    requeued: list[tuple[uuid.UUID, str]] = []
    for job_id, kind, attempts in stale:
        still_stale = (Job.id == job_id, Job.status == JobStatus.RUNNING, Job.heartbeat_at < cutoff)
        if kind in RESUMABLE_KINDS and attempts < MAX_ATTEMPTS and not _cancelled(session, job_id):
            done = session.execute(
                update(Job)
                .where(*still_stale)
                .values(status=JobStatus.QUEUED, heartbeat_at=None, started_at=None)
            )
            if done.rowcount:  # type: ignore[attr-defined]
                requeued.append((job_id, kind))
            continue
        done = session.execute(
            update(Job)
            .where(*still_stale)
            .values(
                status=JobStatus.FAILED,
                finished_at=utcnow(),
                lock_key=None,
                error=f"worker lost: no heartbeat for {int(timeout.total_seconds())} s",
            )
        )
        failed += int(done.rowcount)  # type: ignore[attr-defined]
    session.commit()
    return Reaped(failed, requeued)


def retry_job(
    session: Session,
    celery: Celery,
    *,
    tenant_id: uuid.UUID,
    job_id: uuid.UUID,
    created_by: uuid.UUID | None,
    limits: Limits,
) -> Job:
    """Start a failed or cancelled job again, as a new job with the same parameters (charged
    to the job budget like any other); parameters the contract no longer accepts are refused
    (Invalid naming the field)."""
    old = get_job(session, tenant_id=tenant_id, job_id=job_id)
    if old.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
        raise Conflict(f"only failed or cancelled jobs can be retried; this one is {old.status}")
    return start_job(
        session,
        celery,
        tenant_id=old.tenant_id,
        agent_id=old.agent_id,
        kind=old.kind,
        params={**old.params, "retry_of": str(old.id)},
        created_by=created_by,
        limits=limits,
    )


def _cancelled(session: Session, job_id: uuid.UUID) -> bool:
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def request_cancel(session: Session, *, tenant_id: uuid.UUID, job_id: uuid.UUID) -> Job:
    """A queued job is cancelled at once; a running one stops at its next safe point (it
    activates nothing). A finished job cannot be cancelled."""
    job = get_job(session, tenant_id=tenant_id, job_id=job_id)
    if job.status.finished:
        raise Conflict(f"job {job_id} already ended ({job.status})")
    job.cancel_requested = True
    if job.status == JobStatus.QUEUED:
        job.status = JobStatus.CANCELLED
        job.finished_at = utcnow()
        job.lock_key = None
        job.error = "cancelled before it started"
    session.commit()
    return job


class DatabaseReporter:
    """The `JobReporter` of a job row: each report is also a heartbeat."""

    def __init__(self, database: Database, job_id: uuid.UUID) -> None:
        self.database = database
        self.job_id = job_id
        self._log: list[str] = []

    def progress(self, step: int, total: int, metrics: dict[str, Any] | None = None) -> None:
        values: dict[str, Any] = {"step": step, "total": total, "heartbeat_at": utcnow()}
        if metrics is not None:
            values["metrics"] = metrics
        self._update(values)

    def log(self, line: str) -> None:
        self._log.append(line)
        tail = "\n".join(self._log)[-LOG_TAIL_CHARS:]
        self._update({"log_tail": tail, "heartbeat_at": utcnow()})

    def check_cancelled(self) -> None:
        """Call at safe points: raises JobCancelled once an admin asked for it."""
        with self.database.session() as session:
            if _cancelled(session, self.job_id):
                raise JobCancelled("cancelled by an admin")

    def _update(self, values: dict[str, Any]) -> None:
        with self.database.session() as session:
            session.execute(update(Job).where(Job.id == self.job_id).values(**values))
            session.commit()
