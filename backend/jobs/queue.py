"""The Celery side of the job contract (backend/jobs/contract.py): the app both the API
(producer) and the workers (consumers) build from the same settings, its routing, and
`dispatch_job`."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery import Celery

from backend.config import Settings
from backend.errors import Unavailable
from backend.jobs.contract import (
    FAST_LOOP_TRIGGER_TASK,
    MAINTENANCE_QUEUE,
    REAP_TASK,
    RUN_TASK,
    SCHEDULES_TASK,
    job_payload,
    queue_of,
)

logger = logging.getLogger(__name__)

# The periodic tasks; a job (RUN_TASK) goes to its kind's queue (`route_task`).
TASK_ROUTES: dict[str, dict[str, str]] = {
    REAP_TASK: {"queue": MAINTENANCE_QUEUE},
    FAST_LOOP_TRIGGER_TASK: {"queue": MAINTENANCE_QUEUE},
    SCHEDULES_TASK: {"queue": MAINTENANCE_QUEUE},
}
# Long jobs: a message is redelivered only if its worker has not acked it for this long.
VISIBILITY_TIMEOUT_S = 6 * 3600


def _transport_options(broker_url: str) -> dict[str, Any]:
    # Redis and SQS redeliver unacked messages after a visibility timeout; keep it longer than
    # the longest job. (The SQLAlchemy transport hands its options to create_engine instead.)
    if broker_url.startswith(("redis", "rediss", "sqs")):
        return {"visibility_timeout": VISIBILITY_TIMEOUT_S}
    return {}


def route_task(
    name: str, args: Any, kwargs: dict[str, Any] | None, options: Any, task: Any = None, **_: Any
) -> dict[str, str] | None:
    """Celery router: a job to its kind's queue, however it is sent; the rest by name."""
    if name == RUN_TASK and kwargs and "kind" in kwargs:
        return {"queue": queue_of(kwargs["kind"])}
    return TASK_ROUTES.get(name)


def make_celery(settings: Settings) -> Celery:
    app = Celery("fastslow", broker=settings.broker_url)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue=MAINTENANCE_QUEUE,
        task_routes=(route_task,),
        broker_transport_options=_transport_options(settings.broker_url),
        broker_connection_retry_on_startup=True,
        # An error answer from the broker (Redis out of memory: "command not allowed when used
        # memory > maxmemory") is retried like a lost connection instead of stopping the worker.
        broker_channel_error_retry=True,
        task_publish_retry_policy={"max_retries": 3, "interval_start": 0, "interval_step": 0.5},
        worker_hijack_root_logger=False,
        beat_schedule={
            "reap-stale-jobs": {"task": REAP_TASK, "schedule": settings.reaper_interval_s},
            "schedules": {"task": SCHEDULES_TASK, "schedule": settings.schedule_check_interval_s},
            "fast-loop-triggers": {
                "task": FAST_LOOP_TRIGGER_TASK,
                "schedule": settings.fast_loop_check_interval_s,
            },
        },
    )
    return app


def dispatch_job(app: Celery, *, job_id: uuid.UUID, kind: str) -> None:
    """Send a job to the workers of its kind's queue (RUN_TASK)."""
    payload, queue = job_payload(job_id, kind), queue_of(kind)  # Invalid for unknown kinds
    try:
        app.send_task(RUN_TASK, kwargs=payload, queue=queue)
    except Exception as exc:  # kombu raises many types when the broker is down
        # The broker's error text (its address, its internals) is for the server log only.
        logger.warning("job %s not queued: the broker refused it", job_id, exc_info=True)
        raise Unavailable("the job queue is unavailable") from exc
