"""Running a job: claim it, keep its heartbeat, run the work, record the outcome.

Independent of Celery: the task calls `run_job` with the job id it received, and work that
picks the kind's handler (worker/handlers.py).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from sqlalchemy import update

from backend.db import Database, utcnow
from backend.engines import EngineUnavailable
from backend.errors import DomainError
from backend.jobs import service
from backend.jobs.contract import JobCancelled, JobReporter
from backend.jobs.contract import JobOutcome as JobOutcome  # re-exported: old imports
from backend.jobs.models import Job
from backend.jobs.service import DatabaseReporter
from backend.observability.logging import job_context
from backend.observability.worker import JobObservation

logger = logging.getLogger(__name__)


Work = Callable[[Job, JobReporter], Coroutine[Any, Any, JobOutcome]]


def public_error(exc: BaseException, job_id: uuid.UUID) -> str:
    """What the tenant sees of a job's failure: its own validation messages ("no rated
    rollouts yet") as they are, a generic reason for anything else. Exception text and
    tracebacks (paths, hosts, internals) go to the server log only, under the job id."""
    if isinstance(exc, DomainError):
        return exc.message
    if isinstance(exc, EngineUnavailable):
        return "the engine is unreachable"
    return f"internal error (id {job_id}); the details are in the server log"


class _Heartbeat(threading.Thread):
    """Marks the job alive while the work runs, even through long silent steps."""

    def __init__(self, database: Database, job_id: uuid.UUID, interval_s: float) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{job_id}")
        self.database, self.job_id, self.interval_s = database, job_id, interval_s
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval_s):
            try:
                with self.database.session() as session:
                    session.execute(
                        update(Job).where(Job.id == self.job_id).values(heartbeat_at=utcnow())
                    )
                    session.commit()
            except Exception:  # a missed beat is harmless; the reaper allows many
                logger.warning("heartbeat of job %s failed", self.job_id, exc_info=True)


def run_job(
    database: Database,
    job_id: uuid.UUID,
    work: Work,
    run: Callable[[Coroutine[Any, Any, JobOutcome]], JobOutcome],
    *,
    heartbeat_s: float,
) -> bool:
    """Run `work` for a queued job; False if the job was not there to claim."""
    with job_context(str(job_id)):  # every record logged for this job carries its id
        return _run_job(database, job_id, work, run, heartbeat_s=heartbeat_s)


def _run_job(
    database: Database,
    job_id: uuid.UUID,
    work: Work,
    run: Callable[[Coroutine[Any, Any, JobOutcome]], JobOutcome],
    *,
    heartbeat_s: float,
) -> bool:
    with database.session() as session:
        job = service.claim_job(session, job_id=job_id)
    if job is None:
        logger.info("job %s is not queued any more; skipping", job_id)
        return False
    observed = JobObservation(job.kind)
    logger.info("job %s (%s) started, attempt %d", job_id, job.kind, job.attempts)
    reporter: JobReporter = DatabaseReporter(database, job_id)
    heartbeat = _Heartbeat(database, job_id, heartbeat_s)
    heartbeat.start()
    try:
        outcome = run(work(job, reporter))
    except JobCancelled as exc:
        reporter.log(f"stopped: {exc}")
        with database.session() as session:
            service.cancel_job(session, job_id=job_id, reason=str(exc))
        observed.done("cancelled")
        return True
    except Exception as exc:
        logger.exception("job %s failed", job_id)  # the full text, for an operator
        error = public_error(exc, job_id)
        reporter.log(f"failed: {error}")
        with database.session() as session:
            service.fail_job(session, job_id=job_id, error=error)
        observed.done("failed")
        return True
    finally:
        heartbeat.stopped.set()
    with database.session() as session:
        service.finish_job(session, job_id=job_id, result=outcome.result, metrics=outcome.metrics)
    observed.done("succeeded")
    logger.info("job %s (%s) succeeded", job_id, job.kind)
    return True
