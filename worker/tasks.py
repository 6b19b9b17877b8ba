"""Celery tasks: thin wrappers that take ids and call code that runs without Celery.

One task runs every job (`RUN_TASK`: job id and kind), on the kind's queue; the kind's handler
is imported when a job of that kind first runs (worker/handlers.py), so importing this module
imports no learning code: a fast worker never loads torch. The periodic tasks are beat's.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from backend.jobs.contract import (
    FAST_LOOP_TRIGGER_TASK,
    REAP_TASK,
    RUN_TASK,
    SCHEDULES_TASK,
    JobOutcome,
    JobReporter,
)
from backend.jobs.models import Job
from backend.jobs.queue import dispatch_job
from backend.jobs.service import reap_stale_jobs
from backend.limits.service import default_limits
from worker.app import celery_app
from worker.fast.triggers import dispatch_due
from worker.handlers import run_handler
from worker.jobs import run_job
from worker.resources import resources
from worker.schedules import fire_due

logger = logging.getLogger(__name__)


@celery_app.task(name=RUN_TASK)  # type: ignore[untyped-decorator]
def run(job_id: str, kind: str) -> None:
    res = resources()

    async def work(job: Job, reporter: JobReporter) -> JobOutcome:
        return await run_handler(res, job, reporter, kind=kind)

    run_job(res.database, uuid.UUID(job_id), work, res.run, heartbeat_s=res.heartbeat_s)


def _legacy(kind: str) -> None:
    # Messages a version before the single task queued (one task name per kind, job id only)
    # still run after an upgrade: drop these once no such message can be left in a queue.
    @celery_app.task(name=f"fastslow.jobs.{kind}")  # type: ignore[untyped-decorator]
    def legacy(job_id: str) -> None:
        run(job_id, kind)


for _kind in ("evaluate", "optimize", "train"):
    _legacy(_kind)


@celery_app.task(name=FAST_LOOP_TRIGGER_TASK)  # type: ignore[untyped-decorator]
def fast_loop_dispatch_due() -> int:
    res = resources()
    return len(dispatch_due(res.database, celery_app, limits=default_limits(res.settings)))


@celery_app.task(name=SCHEDULES_TASK)  # type: ignore[untyped-decorator]
def schedules_fire_due() -> int:
    res = resources()
    return len(fire_due(res.database, celery_app, limits=default_limits(res.settings)))


@celery_app.task(name=REAP_TASK)  # type: ignore[untyped-decorator]
def reap_stale() -> int:
    res = resources()
    timeout = timedelta(seconds=res.settings.job_heartbeat_timeout_s)
    with res.database.session() as session:
        reaped = reap_stale_jobs(
            session,
            timeout=timeout,
            queued_timeout=timedelta(seconds=res.settings.job_queue_timeout_s),
        )
    for job_id, kind in reaped.requeued:
        logger.warning("job %s lost its worker; queued again to resume", job_id)
        dispatch_job(celery_app, job_id=job_id, kind=kind)
    if reaped.failed:
        logger.warning("failed %d jobs whose workers stopped", reaped.failed)
    return reaped.failed + len(reaped.requeued)
