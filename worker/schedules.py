"""Beat's tick: start the slow-loop runs whose schedules are due (read from the database, so
edits apply at once and no restart is needed)."""

from __future__ import annotations

import logging
import uuid

from celery import Celery

from backend.config import get_settings
from backend.db import Database
from backend.errors import Conflict, QuotaExceeded, Unavailable
from backend.jobs.contract import TrainParams, Trigger
from backend.jobs.models import JobKind
from backend.jobs.service import start_job
from backend.limits.service import Limits, default_limits
from backend.schedules.service import claim_due, decide, record_firing, release

logger = logging.getLogger(__name__)


def fire_due(
    database: Database, celery: Celery, *, limits: Limits | None = None
) -> list[uuid.UUID]:
    """Start the due schedules' runs; a tenant over its daily job budget (`limits`: the
    deployment's defaults) has its run skipped, and the skip recorded."""
    limits = limits or default_limits(get_settings())
    started: list[uuid.UUID] = []
    with database.session() as session:
        for claim in claim_due(session):
            schedule = claim.schedule
            decision = decide(session, schedule=schedule)
            job_id = None
            outcome = decision.reason
            if decision.run:
                try:
                    job = start_job(
                        session,
                        celery,
                        tenant_id=schedule.tenant_id,
                        agent_id=schedule.agent_id,
                        kind=JobKind.TRAIN,
                        params=TrainParams(trigger=Trigger.SCHEDULE, why=decision.reason),
                        exclusive=True,
                        limits=limits,
                    )
                    job_id = job.id
                    started.append(job.id)
                    outcome = f"started: {decision.reason}"
                except Conflict:
                    outcome = "skipped: a run of this agent is already queued or running"
                except QuotaExceeded as exc:
                    outcome = f"skipped: {exc.message}"
                except Unavailable as exc:
                    # The next tick retries (a tick the broker delivers: it is back).
                    release(session, claim=claim)
                    outcome = f"failed to start, retried at the next tick: {exc.message}"
            record_firing(session, schedule_id=schedule.id, outcome=outcome, job_id=job_id)
            logger.info("schedule of agent %s: %s", schedule.agent_id, outcome)
    return started
