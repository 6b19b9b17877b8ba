"""When the fast loop runs by itself: after N new ratings of an agent, or M minutes after the
first new rating, whichever comes first (N, M per agent). "New" means newer than the agent's
last optimisation job, so a run that found nothing to do waits for new feedback again; a job
the broker refused does not count, so the loop catches up once the broker is back."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

from celery import Celery
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend.agents.fast_loop import due_reason
from backend.agents.models import Agent
from backend.agents.service import fast_loop_settings
from backend.config import get_settings
from backend.db import Database, utcnow
from backend.errors import Conflict, QuotaExceeded, Unavailable
from backend.jobs.contract import OptimizeParams, Trigger
from backend.jobs.models import Job, JobKind
from backend.jobs.service import ran_or_will_run, start_job
from backend.limits.service import Limits, default_limits
from backend.rollouts.models import Feedback

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Due:
    agent_id: uuid.UUID
    tenant_id: uuid.UUID
    reason: str


def due_agents(session: Session, *, now: datetime | None = None) -> list[Due]:
    now = now or utcnow()
    last_run = (
        select(Job.agent_id, func.max(Job.created_at).label("last"))
        .where(Job.kind == JobKind.OPTIMIZE, ran_or_will_run())
        .group_by(Job.agent_id)
        .subquery()
    )
    fresh = session.execute(
        select(Feedback.agent_id, func.count(), func.min(Feedback.created_at))
        .outerjoin(last_run, last_run.c.agent_id == Feedback.agent_id)
        .where((last_run.c.last.is_(None)) | (Feedback.created_at > last_run.c.last))
        .group_by(Feedback.agent_id)
    ).all()
    if not fresh:
        return []
    agents = {
        a.id: a
        for a in session.scalars(select(Agent).where(Agent.id.in_([r[0] for r in fresh]))).unique()
    }
    due: list[Due] = []
    for agent_id, count, first in fresh:
        agent = agents[agent_id]
        reason = due_reason(fast_loop_settings(agent), new_ratings=count, first_new=first, now=now)
        if reason is not None:
            due.append(Due(agent.id, agent.tenant_id, reason))
    return due


def dispatch_due(
    database: Database, celery: Celery, *, limits: Limits | None = None
) -> list[uuid.UUID]:
    """Start an optimisation job for every agent that is due and not already optimising, and
    whose tenant has job budget left (`limits`: the deployment's defaults)."""
    limits = limits or default_limits(get_settings())
    started: list[uuid.UUID] = []
    with database.session() as session:
        for due in due_agents(session):
            try:
                job = start_job(
                    session,
                    celery,
                    tenant_id=due.tenant_id,
                    agent_id=due.agent_id,
                    kind=JobKind.OPTIMIZE,
                    params=OptimizeParams(trigger=Trigger.FEEDBACK, why=due.reason),
                    exclusive=True,
                    limits=limits,
                )
            except Conflict:
                continue  # one is queued or running already
            except QuotaExceeded as exc:
                # Not an error: the run waits until the tenant's budget has room again.
                logger.info("fast loop for agent %s not started: %s", due.agent_id, exc.message)
                continue
            except Unavailable:
                # The broker is down for every agent: the next tick tries again (the failed
                # job does not count as a run, see ran_or_will_run).
                logger.warning("broker unavailable; fast loop for %s waits", due.agent_id)
                break
            logger.info("fast loop for agent %s: %s", due.agent_id, due.reason)
            started.append(job.id)
    return started
