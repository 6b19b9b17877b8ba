from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from backend.http.deps import DatabaseDep, EngineDep

logger = logging.getLogger(__name__)
router = APIRouter(tags=["health"])
# What an anonymous caller learns of a failed check: which one, never why (the error text
# names hosts, ports and users); the server log has the full text.
_DOWN = {
    "database": "down: the database is unreachable",
    "broker": "down: the job queue is unreachable",
    "engine": "down: the engine is unreachable",
}


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
async def readyz(request: Request, database: DatabaseDep, engine: EngineDep) -> JSONResponse:
    """The database, the broker and the engine are reachable: send traffic here."""
    checks: dict[str, str] = {}

    def check_database() -> None:
        with database.session() as session:
            session.execute(text("SELECT 1"))

    def check_broker() -> None:
        with request.app.state.celery.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)

    async def run(name: str, check: Any) -> None:
        try:
            await asyncio.wait_for(check(), timeout=5)
            checks[name] = "ok"
        except Exception:
            logger.warning("readiness check %s failed", name, exc_info=True)
            checks[name] = _DOWN[name]

    await asyncio.gather(
        run("database", lambda: run_in_threadpool(check_database)),
        run("broker", lambda: run_in_threadpool(check_broker)),
        run("engine", engine.health),
    )
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )
