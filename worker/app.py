"""The Celery app of the workers and beat (`fastslow worker`, `fastslow beat`)."""

from __future__ import annotations

from backend.config import get_settings
from backend.jobs.queue import make_celery

celery_app = make_celery(get_settings())
celery_app.conf.imports = ("worker.tasks",)
