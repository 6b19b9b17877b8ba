"""Celery tasks: thin wrappers that take ids and call code that runs without Celery."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from backend.jobs.models import Job
from backend.jobs.queue import (
    EVALUATE_TASK,
    FAST_LOOP_TRIGGER_TASK,
    OPTIMIZE_TASK,
    REAP_TASK,
    SCHEDULES_TASK,
    TRAIN_TASK,
    dispatch_job,
)
from backend.jobs.service import JobReporter, reap_stale_jobs
from backend.limits.service import default_limits
from backend.lm import reflection_lm
from worker.app import celery_app
from worker.evaluation import evaluate_agent
from worker.fast.optimizer import optimize_agent
from worker.fast.triggers import dispatch_due
from worker.jobs import JobOutcome, run_job
from worker.resources import resources
from worker.schedules import fire_due
from worker.slow.trainer import train_agent

logger = logging.getLogger(__name__)


@celery_app.task(name=EVALUATE_TASK)  # type: ignore[untyped-decorator]
def evaluate(job_id: str) -> None:
    res = resources()

    async def work(job: Job, reporter: JobReporter) -> JobOutcome:
        return await evaluate_agent(res.database, res.engine, res.store, job, reporter)

    run_job(res.database, uuid.UUID(job_id), work, res.run, heartbeat_s=res.heartbeat_s)


@celery_app.task(name=OPTIMIZE_TASK)  # type: ignore[untyped-decorator]
def optimize(job_id: str) -> None:
    res = resources()
    lm = reflection_lm(res.settings, res.engine)

    async def work(job: Job, reporter: JobReporter) -> JobOutcome:
        return await optimize_agent(res.database, res.engine, res.store, lm, job, reporter)

    run_job(res.database, uuid.UUID(job_id), work, res.run, heartbeat_s=res.heartbeat_s)


@celery_app.task(name=TRAIN_TASK)  # type: ignore[untyped-decorator]
def train(job_id: str) -> None:
    res = resources()
    lm = reflection_lm(res.settings, res.engine)

    async def work(job: Job, reporter: JobReporter) -> JobOutcome:
        return await train_agent(
            res.database, res.engine, res.store, lm, job, reporter, res.settings
        )

    run_job(res.database, uuid.UUID(job_id), work, res.run, heartbeat_s=res.heartbeat_s)


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
