"""Schedules of the slow loop, one per agent, and deciding what a due schedule does."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from backend.agents.models import Agent
from backend.agents.schemas import FastLoopSettings
from backend.agents.service import fast_loop_settings
from backend.db import utcnow
from backend.errors import NotFound
from backend.jobs.models import Job, JobKind
from backend.jobs.service import ran_or_will_run
from backend.rollouts.models import Feedback, Rollout
from backend.schedules.models import Schedule
from backend.schedules.schemas import FastLoopTriggers, ScheduleRead, ScheduleWrite
from backend.schedules.timing import describe, next_after, upcoming


def get_schedule(session: Session, *, agent: Agent) -> Schedule:
    row = session.scalar(
        select(Schedule).where(Schedule.agent_id == agent.id, Schedule.tenant_id == agent.tenant_id)
    )
    if row is None:
        raise NotFound(f"agent {agent.slug!r} has no schedule")
    return row


def put_schedule(session: Session, *, agent: Agent, body: ScheduleWrite) -> Schedule:
    """Create or replace the agent's schedule; it applies from now on, without restarts."""
    row = session.scalar(select(Schedule).where(Schedule.agent_id == agent.id))
    if row is None:
        row = Schedule(tenant_id=agent.tenant_id, agent_id=agent.id)
        session.add(row)
    for field in (
        "enabled",
        "cron",
        "timezone",
        "interval_s",
        "min_new_rollouts",
        "min_new_feedback",
        "skip_if_unchanged",
    ):
        setattr(row, field, getattr(body, field))
    row.next_run_at = next_after(
        utcnow(), cron=row.cron, interval_s=row.interval_s, timezone=row.timezone
    )
    if body.fast_loop is not None:
        patch = body.fast_loop.model_dump(exclude_none=True)
        agent.fast_loop = FastLoopSettings.model_validate(
            {**fast_loop_settings(agent).model_dump(), **patch}
        ).model_dump()
    session.commit()
    return row


def delete_schedule(session: Session, *, agent: Agent) -> None:
    session.delete(get_schedule(session, agent=agent))
    session.commit()


def schedule_view(row: Schedule, agent: Agent) -> ScheduleRead:
    fast = fast_loop_settings(agent)
    after = upcoming(
        row.next_run_at, cron=row.cron, interval_s=row.interval_s, timezone=row.timezone, count=4
    )
    return ScheduleRead(
        enabled=row.enabled,
        cron=row.cron,
        timezone=row.timezone,
        interval_s=row.interval_s,
        min_new_rollouts=row.min_new_rollouts,
        min_new_feedback=row.min_new_feedback,
        skip_if_unchanged=row.skip_if_unchanged,
        description=describe(cron=row.cron, interval_s=row.interval_s, timezone=row.timezone),
        next_runs=[row.next_run_at, *after],
        last_fired_at=row.last_fired_at,
        last_outcome=row.last_outcome,
        last_job_id=str(row.last_job_id) if row.last_job_id else None,
        fast_loop=FastLoopTriggers(
            pinned=fast.pinned,
            min_new_feedback=fast.min_new_feedback,
            max_wait_minutes=fast.max_wait_minutes,
        ),
    )


@dataclass(frozen=True)
class Claim:
    """One due occurrence of a schedule, won by this caller: `next_run_at` was moved from
    `due_at` to `next_at`."""

    schedule: Schedule
    due_at: datetime
    next_at: datetime


def claim_due(session: Session, *, now: datetime | None = None) -> list[Claim]:
    """Due schedules this caller won: each occurrence is moved forward with a compare-and-set,
    so concurrent callers (two beats) never both get it. Missed occurrences (beat was down)
    collapse into one: the next time is computed from now, not from the missed time."""
    now = now or utcnow()
    won: list[Claim] = []
    for row in session.scalars(
        select(Schedule).where(Schedule.enabled, Schedule.next_run_at <= now)
    ).all():
        due_at = row.next_run_at
        following = next_after(now, cron=row.cron, interval_s=row.interval_s, timezone=row.timezone)
        moved = session.execute(
            update(Schedule)
            .where(Schedule.id == row.id, Schedule.next_run_at == due_at)
            .values(next_run_at=following)
        )
        session.commit()
        if moved.rowcount == 1:  # type: ignore[attr-defined]
            won.append(Claim(row, due_at, following))
    return won


def release(session: Session, *, claim: Claim) -> None:
    """Give a claimed occurrence back (its run could not be started: the broker refused it),
    so the next tick tries again instead of waiting for the next occurrence. Unless someone
    moved the schedule since (an admin edited it): then their time stands."""
    session.execute(
        update(Schedule)
        .where(Schedule.id == claim.schedule.id, Schedule.next_run_at == claim.next_at)
        .values(next_run_at=claim.due_at)
    )
    session.commit()


@dataclass(frozen=True)
class Decision:
    run: bool
    reason: str


def decide(session: Session, *, schedule: Schedule) -> Decision:
    """Whether a due schedule starts a run, given what changed since the agent's last run."""
    last = session.scalar(
        select(func.max(Job.created_at)).where(
            Job.agent_id == schedule.agent_id, Job.kind == JobKind.TRAIN, ran_or_will_run()
        )
    )
    rollouts = _count_since(session, Rollout, schedule.agent_id, last)
    feedback = _count_since(session, Feedback, schedule.agent_id, last)
    if schedule.skip_if_unchanged and last is not None and rollouts == 0 and feedback == 0:
        return Decision(False, "skipped: nothing new since the last run")
    if rollouts < schedule.min_new_rollouts:
        return Decision(
            False, f"skipped: {rollouts} new rollouts, {schedule.min_new_rollouts} needed"
        )
    if feedback < schedule.min_new_feedback:
        return Decision(
            False, f"skipped: {feedback} new ratings, {schedule.min_new_feedback} needed"
        )
    return Decision(True, f"{rollouts} new rollouts, {feedback} new ratings")


def _count_since(
    session: Session,
    model: type[Rollout] | type[Feedback],
    agent_id: uuid.UUID,
    since: datetime | None,
) -> int:
    query = select(func.count()).select_from(model).where(model.agent_id == agent_id)
    if since is not None:
        query = query.where(model.created_at > since)
    return int(session.scalar(query) or 0)


def record_firing(
    session: Session, *, schedule_id: uuid.UUID, outcome: str, job_id: uuid.UUID | None
) -> None:
    session.execute(
        update(Schedule)
        .where(Schedule.id == schedule_id)
        .values(last_fired_at=utcnow(), last_outcome=outcome[:2000], last_job_id=job_id)
    )
    session.commit()
