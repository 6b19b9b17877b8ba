"""The top of the house: builds the FastAPI application. Mounts the OpenAI-compatible `/v1`
routes, one `/api/v1` router holding every domain's admin routes, the health checks and the web
UI; installs error handling, body limits, security headers and observability; owns the
per-process resources (database, engine, runtime, Celery app)."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import FileResponse, JSONResponse
from fastapi.routing import APIRoute

import backend.models  # noqa: F401  (every model mapped before the first query)
from backend.adapters.views import router as adapters_router
from backend.agents.views import router as agents_router
from backend.audit.views import router as audit_router
from backend.chat.service import make_recorder
from backend.chat.views import router as chat_router
from backend.config import Settings, get_settings
from backend.db import Database
from backend.engines import Engine, build_engine
from backend.health import router as health_router
from backend.http.body_size import BodySizeLimit
from backend.http.errors import install_error_handlers
from backend.http.security import SecurityHeaders
from backend.http.text import refuse_nul
from backend.jobs.queue import make_celery
from backend.jobs.views import agent_jobs_router
from backend.jobs.views import router as jobs_router
from backend.limits.views import router as limits_router
from backend.observability.api import install_observability, observe_serving
from backend.prompts.views import router as prompts_router
from backend.rollouts.views import feedback_router
from backend.rollouts.views import router as rollouts_router
from backend.runtime.agent import AgentRuntime
from backend.schedules.views import router as schedules_router
from backend.tenants.deps import upload_refusal
from backend.tenants.views import keys_router, me_router, tenants_router

logger = logging.getLogger(__name__)

FRONTEND_DIR = Path(__file__).resolve().parents[1] / "frontend"
API_PREFIX = "/api/v1"
ADAPTER_UPLOAD = re.compile(rf"^{API_PREFIX}/agents/[^/]+/adapters/?$")

# The admin API: every domain's routes under one prefix (each router names only its own path).
api_router = APIRouter(prefix=API_PREFIX)
for _router in (
    tenants_router,
    keys_router,
    me_router,
    agents_router,
    prompts_router,
    adapters_router,
    agent_jobs_router,
    schedules_router,
    jobs_router,
    rollouts_router,
    limits_router,
    audit_router,
):
    api_router.include_router(_router)


def _operation_id(route: APIRoute) -> str:
    # Stable ids (the route function's name) so generated clients do not churn.
    return route.name


def create_app(settings: Settings | None = None, *, engine: Engine | None = None) -> FastAPI:
    """Build the app. `engine` lets a caller share an already loaded engine (tests)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = Database(settings.database_url)
        own_engine = engine is None
        active_engine = engine or build_engine(settings)
        app.state.settings = settings
        app.state.database = database
        app.state.engine = active_engine
        app.state.runtime = AgentRuntime(*observe_serving(active_engine, make_recorder(database)))
        app.state.celery = make_celery(settings)
        logger.info(
            "fastslow API ready: engine=%s base_model=%s", settings.engine, active_engine.base_model
        )
        try:
            yield
        finally:
            if own_engine:
                await active_engine.aclose()
            database.dispose()

    app = FastAPI(
        title="fastslow",
        version="0.1.0",
        description="Agents that keep learning from the people who use them.",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
        # Every stored text: no NUL characters (PostgreSQL refuses them mid-write).
        dependencies=[Depends(refuse_nul)],
    )
    install_error_handlers(app)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_request_bytes,
        max_upload_bytes=settings.max_adapter_bytes,
        upload_path=ADAPTER_UPLOAD,
        # The database exists once the lifespan has run, before any request.
        upload_refusal=lambda key: upload_refusal(settings, app.state.database, key),
    )
    app.add_middleware(SecurityHeaders)  # on every response, refusals included
    install_observability(app, settings)  # outermost: sees every request
    for router in (health_router, chat_router, feedback_router, api_router):
        app.include_router(router)

    _serve_frontend(app)
    return app


def _serve_frontend(app: FastAPI) -> None:
    """The web UI's build at `/` (a single-page app: unknown paths get index.html), or a
    placeholder page when the UI has not been built."""
    dist = FRONTEND_DIR / "dist"
    index = dist / "index.html"

    @app.get("/{path:path}", include_in_schema=False, response_model=None)
    def frontend(path: str) -> FileResponse | JSONResponse:
        if path.startswith(("api/", "v1/")) or path in ("api", "v1"):
            return JSONResponse({"detail": "Not Found", "code": "not_found"}, status_code=404)
        if not index.exists():
            return FileResponse(FRONTEND_DIR / "placeholder.html")
        asset = (dist / path).resolve()
        if path and asset.is_file() and asset.is_relative_to(dist.resolve()):
            return FileResponse(asset)
        return FileResponse(index)
