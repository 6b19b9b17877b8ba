"""Request body limits, enforced before a route reads the body (also for chunked uploads)."""

from __future__ import annotations

import re

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.api.errors import error_response

_ADAPTER_UPLOAD = re.compile(r"^/api/v1/agents/[^/]+/adapters/?$")


class BodySizeLimit:
    """413 for bodies over the limit; adapter uploads get their own, larger limit.

    A declared Content-Length over the limit is refused before the app runs; a chunked body
    is counted as it is read, and the route fails with 413 once it passes the limit.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_upload_bytes if _ADAPTER_UPLOAD.match(scope["path"]) else self.max_bytes
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
