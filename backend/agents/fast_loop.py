"""When an agent's fast loop is due: one rule, used by beat's trigger and by the status API."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend.agents.models import Agent
from backend.agents.schemas import FastLoopSettings
from backend.agents.service import fast_loop_settings
from backend.db import utcnow
from backend.jobs.models import Job, JobKind, JobStatus
from backend.jobs.service import ran_or_will_run
from backend.rollouts.models import Feedback


def due_reason(
    settings: FastLoopSettings, *, new_ratings: int, first_new: datetime | None, now: datetime
) -> str | None:
    """Why the fast loop should run now, or None: after N new ratings, or M minutes after the
    first new one (never while pinned)."""
    if settings.pinned or not new_ratings or first_new is None:
        return None
    if new_ratings >= settings.min_new_feedback:
        return f"{new_ratings} new ratings"
    if now - first_new >= timedelta(minutes=settings.max_wait_minutes):
        return f"{new_ratings} new ratings, oldest {now - first_new} ago"
    return None


@dataclass(frozen=True)
class FastLoopStatus:
    pinned: bool
    new_ratings: int
    min_new_feedback: int
    due_at: datetime | None  # when M minutes will have passed since the first new rating
    due_reason: str | None
    running_job_id: uuid.UUID | None
    last_job_id: uuid.UUID | None


def fast_loop_status(
    session: Session, *, agent: Agent, now: datetime | None = None
) -> FastLoopStatus:
    now = now or utcnow()
    settings = fast_loop_settings(agent)
    jobs = select(Job).where(Job.agent_id == agent.id, Job.kind == JobKind.OPTIMIZE)
    last = session.scalars(
        jobs.where(ran_or_will_run()).order_by(Job.created_at.desc()).limit(1)
    ).first()
    running = session.scalars(
        jobs.where(Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
    ).first()
    query = select(func.count(), func.min(Feedback.created_at)).where(
        Feedback.agent_id == agent.id, Feedback.tenant_id == agent.tenant_id
    )
    if last is not None:
        query = query.where(Feedback.created_at > last.created_at)
    count, first = session.execute(query).one()
    return FastLoopStatus(
        pinned=settings.pinned,
        new_ratings=int(count),
        min_new_feedback=settings.min_new_feedback,
        due_at=first + timedelta(minutes=settings.max_wait_minutes) if first else None,
        due_reason=due_reason(settings, new_ratings=int(count), first_new=first, now=now),
        running_job_id=running.id if running else None,
        last_job_id=last.id if last else None,
    )
