"""Per-process resources of a worker: a database engine, the model engine, an event loop.

Built lazily in the child process (never before the prefork), and reused across tasks so the
local engine loads the model once per process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from celery.signals import worker_process_init, worker_process_shutdown

import backend.models  # noqa: F401  (every model mapped before the first query)
from backend.adapters.storage import adapter_store
from backend.config import get_settings
from backend.db import Database
from backend.engines import Engine, build_engine

T = TypeVar("T")


class WorkerResources:
    def __init__(self) -> None:
        self.settings = get_settings()
        self.database = Database(self.settings.database_url)
        self.loop = asyncio.new_event_loop()
        self.store = adapter_store(self.settings)
        self._engine: Engine | None = None

    @property
    def heartbeat_s(self) -> float:
        """Beat well within the reaper's timeout, so a live job is never taken for dead."""
        return min(15.0, self.settings.job_heartbeat_timeout_s / 4)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = build_engine(self.settings)
        return self._engine

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        if self._engine is not None:
            self.run(self._engine.aclose())
        self.loop.close()
        self.database.dispose()


_resources: WorkerResources | None = None


def resources() -> WorkerResources:
    global _resources
    if _resources is None:
        _resources = WorkerResources()
    return _resources


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _fresh_after_fork(**_: Any) -> None:
    global _resources
    _resources = None  # never share a parent's connections with a forked child


@worker_process_shutdown.connect  # type: ignore[untyped-decorator]
def _close(**_: Any) -> None:
    if _resources is not None:
        _resources.close()
