"""Observability of the API process.

`install_observability(app, settings)` adds the middleware and `/metrics`;
`observe_serving(engine, recorder)` wraps the serving path's engine and rollout recorder so
that engine errors, rollouts, tokens and chat latency are counted.
"""

from __future__ import annotations

import hmac
import time

from fastapi import APIRouter, FastAPI, Request, Response

from backend.config import Settings
from backend.engines import ChatMessage, Engine
from backend.errors import NotFound, Unauthorized
from backend.observability.engine import InstrumentedEngine
from backend.observability.metrics import DatabaseCollector, Exposition, record_rollout
from backend.observability.middleware import ObservabilityMiddleware
from backend.runtime.agent import Outcome, Recorder, ServingContext

__all__ = ["check_metrics_settings", "install_observability", "observe_serving"]

router = APIRouter(tags=["health"])
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format"}},
)
def metrics(request: Request) -> Response:
    """Prometheus metrics of this process and of the platform's state. Off with
    `FASTSLOW_METRICS_ENABLED=false`; `FASTSLOW_METRICS_TOKEN` makes it require that bearer
    (production requires a token). Without a token configured (development), anyone may
    scrape, but sees no series labelled by tenant."""
    settings: Settings = request.app.state.settings
    if not settings.metrics_enabled:
        raise NotFound("metrics are disabled")
    exposition: Exposition = request.app.state.metrics
    token = _metrics_token(settings)
    if not token:
        return Response(exposition.render(tenants=False), media_type=CONTENT_TYPE)
    expected = f"Bearer {token}".encode()
    given = request.headers.get("authorization", "").encode()
    if not hmac.compare_digest(given, expected):
        raise Unauthorized("send `Authorization: Bearer <FASTSLOW_METRICS_TOKEN>`")
    return Response(exposition.render(), media_type=CONTENT_TYPE)


def _metrics_token(settings: Settings) -> str:
    return settings.metrics_token.get_secret_value() if settings.metrics_token else ""


def check_metrics_settings(settings: Settings) -> None:
    """Production serves `/metrics` only behind a token: refuse to start otherwise."""
    if (
        settings.environment == "production"
        and settings.metrics_enabled
        and not _metrics_token(settings)
    ):
        raise ValueError(
            "FASTSLOW_METRICS_TOKEN must be set when FASTSLOW_ENVIRONMENT=production "
            "(or turn metrics off with FASTSLOW_METRICS_ENABLED=false)"
        )


def install_observability(app: FastAPI, settings: Settings) -> None:
    check_metrics_settings(settings)
    app.state.metrics = Exposition(
        DatabaseCollector(lambda: app.state.database, settings.metrics_db_cache_s)
    )
    app.add_middleware(ObservabilityMiddleware)
    app.include_router(router)


def observe_serving(engine: Engine, recorder: Recorder) -> tuple[Engine, Recorder]:
    def record(serving: ServingContext, messages: list[ChatMessage], outcome: Outcome) -> None:
        recorder(serving, messages, outcome)
        record_rollout(
            tenant=str(serving.tenant_id),
            agent=serving.agent_slug,
            finish_reason=outcome.finish_reason,
            stream=serving.stream,
            seconds=time.perf_counter() - serving.started,
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
        )

    return InstrumentedEngine(engine), record
