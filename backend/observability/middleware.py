"""Request ids, request metrics and the access log, as one ASGI middleware around the app."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.observability.logging import request_id_var
from backend.observability.metrics import HTTP_LATENCY, HTTP_REQUESTS

access_log = logging.getLogger("fastslow.access")

REQUEST_ID_HEADER = "X-Request-ID"
# Probes and scrapes every few seconds would drown the access log: they are logged at DEBUG.
_QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})
# A caller's id is kept (so a trace spans a load balancer and us) only if it is a plain token.
_VALID_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def _route(scope: Scope) -> str:
    """The matched route's template (`/api/v1/jobs/{job_id}`), never the raw path, so label
    values stay few; `unmatched` when no route matched."""
    # FastAPI >= 0.160 includes routers lazily: the matched route's own `path` lacks the
    # prefixes it was included under, and the whole template is on its effective context.
    effective = scope.get("fastapi", {}).get("effective_route_context")
    path = getattr(effective, "path_format", None) or getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else "unmatched"


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _VALID_ID.fullmatch(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500  # if the app fails before it answers

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append(REQUEST_ID_HEADER, request_id)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            method, route = scope["method"], _route(scope)
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            HTTP_LATENCY.labels(method, route).observe(seconds)
            access_log.log(
                logging.DEBUG if route in _QUIET_ROUTES else logging.INFO,
                "%s %s %d %.1fms",
                method,
                route,
                status,
                seconds * 1000,
                extra={
                    "method": method,
                    "route": route,
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(seconds * 1000, 1),
                },
            )
            request_id_var.reset(token)
