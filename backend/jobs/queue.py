"""The contract between the API (producer) and the workers (consumers): task names, queues,
payloads, and the Celery app both sides build from the same settings."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery import Celery

from backend.config import Settings
from backend.errors import Unavailable
from backend.jobs.models import JobKind

logger = logging.getLogger(__name__)

EVALUATE_TASK = "fastslow.jobs.evaluate"
OPTIMIZE_TASK = "fastslow.jobs.optimize"
TRAIN_TASK = "fastslow.jobs.train"
REAP_TASK = "fastslow.jobs.reap_stale"
FAST_LOOP_TRIGGER_TASK = "fastslow.fast_loop.dispatch_due"
SCHEDULES_TASK = "fastslow.schedules.fire_due"

# `fast`: prompt optimisation and evaluation (CPU is fine); `train`: LoRA RL (GPU workers);
# `maintenance`: small periodic housekeeping.
QUEUES = ("fast", "train", "maintenance")
TASK_OF_KIND: dict[str, str] = {
    JobKind.EVALUATE: EVALUATE_TASK,
    JobKind.OPTIMIZE: OPTIMIZE_TASK,
    JobKind.TRAIN: TRAIN_TASK,
}
TASK_ROUTES: dict[str, dict[str, str]] = {
    EVALUATE_TASK: {"queue": "fast"},
    OPTIMIZE_TASK: {"queue": "fast"},
    TRAIN_TASK: {"queue": "train"},
    REAP_TASK: {"queue": "maintenance"},
    FAST_LOOP_TRIGGER_TASK: {"queue": "maintenance"},
    SCHEDULES_TASK: {"queue": "maintenance"},
}
# Long jobs: a message is redelivered only if its worker has not acked it for this long.
VISIBILITY_TIMEOUT_S = 6 * 3600


def _transport_options(broker_url: str) -> dict[str, Any]:
    # Redis and SQS redeliver unacked messages after a visibility timeout; keep it longer than
    # the longest job. (The SQLAlchemy transport hands its options to create_engine instead.)
    if broker_url.startswith(("redis", "rediss", "sqs")):
        return {"visibility_timeout": VISIBILITY_TIMEOUT_S}
    return {}


def job_payload(job_id: uuid.UUID) -> dict[str, Any]:
    """Every job task takes only the job id; the worker reads the rest from the database."""
    return {"job_id": str(job_id)}


def make_celery(settings: Settings) -> Celery:
    app = Celery("fastslow", broker=settings.broker_url)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue="maintenance",
        task_routes=TASK_ROUTES,
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
    try:
        app.send_task(TASK_OF_KIND[kind], kwargs=job_payload(job_id))
    except Exception as exc:  # kombu raises many types when the broker is down
        # The broker's error text (its address, its internals) is for the server log only.
        logger.warning("job %s not queued: the broker refused it", job_id, exc_info=True)
        raise Unavailable("the job queue is unavailable") from exc
