"""Request body limits, enforced before a route reads the body (also for chunked uploads)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.db import is_unavailable
from backend.errors import DomainError
from backend.http.errors import error_response

logger = logging.getLogger(__name__)

# Why a bearer key (None: no key sent) may not upload, or None when it may; blocking I/O.
UploadRefusal = Callable[[str | None], DomainError | None]


class BodySizeLimit:
    """413 for bodies over the limit; adapter uploads get their own, larger limit, but only
    once their key is known to be a tenant's admin key.

    FastAPI reads a multipart body before it resolves the route's dependencies, so the upload
    route's own key check would come after the whole body was read. The bearer key of a POST
    to `upload_path` is therefore checked here first by `upload_refusal` (the app passes the
    same check its dependencies make), before any of the body is read. (The route checks
    again; rate limiting stays with the route.)

    A declared Content-Length over the limit is refused before the app runs; a chunked body
    is counted as it is read, and the route fails with 413 once it passes the limit.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        max_upload_bytes: int,
        upload_path: re.Pattern[str],
        upload_refusal: UploadRefusal,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_upload_bytes = max_upload_bytes
        self.upload_path = upload_path
        self.upload_refusal = upload_refusal

    async def _upload_refusal(self, scope: Scope) -> Response | None:
        """The response that refuses an upload before its body is read, if any."""
        request = Request(scope)
        scheme, key = get_authorization_scheme_param(request.headers.get("authorization"))
        bearer = key if scheme.lower() == "bearer" and key else None
        try:
            # A database lookup: off the event loop, as the dependencies run it.
            refusal = await run_in_threadpool(self.upload_refusal, bearer)
        except SQLAlchemyError as exc:
            if not is_unavailable(exc):
                raise
            logger.error("database unavailable: %s", exc)
            return error_response(
                request,
                503,
                "the database is unavailable",
                code="unavailable",
                headers={"Retry-After": "5"},
            )
        if refusal is None:
            return None
        return error_response(request, refusal.status_code, refusal.message, code=refusal.code)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        if scope["method"] == "POST" and self.upload_path.match(scope["path"]):
            refusal = await self._upload_refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
            limit = self.max_upload_bytes
        message = f"request body larger than {limit} bytes"
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                response = error_response(Request(scope), 413, message, code="payload_too_large")
                await response(scope, receive, send)
                return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > limit:
                    # FastAPI passes HTTPExceptions raised while reading the body through.
                    raise HTTPException(413, message)
            return msg

        await self.app(scope, counting_receive, send)
