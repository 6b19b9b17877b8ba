"""Browser security headers on every response: the web UI and the API alike.

The UI is a Vite build (one module script and one stylesheet from `/assets`, no inline script
or style), so it runs under a strict Content-Security-Policy. FastAPI's interactive docs
(`/docs`, `/redoc`) are pages FastAPI writes with an inline script and assets from a CDN; they
get a policy that allows exactly that (they show no tenant data). HSTS is sent only on
requests that came over TLS: the scheme is `https`, which uvicorn also sets from
`X-Forwarded-Proto` when the proxy is trusted (`FASTSLOW_FORWARDED_ALLOW_IPS`).
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
_CDN = "https://cdn.jsdelivr.net"
DOCS_CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        f"script-src 'self' 'unsafe-inline' {_CDN}",
        f"style-src 'self' 'unsafe-inline' {_CDN} https://fonts.googleapis.com",
        "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly",
        "font-src 'self' https://fonts.gstatic.com",
        "worker-src 'self' blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)
STRICT_TRANSPORT_SECURITY = "max-age=31536000; includeSubDomains"
_DOCS = ("/docs", "/redoc")

_ALWAYS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # For browsers that predate frame-ancestors.
    "X-Frame-Options": "DENY",
}


class SecurityHeaders:
    """Adds the headers to each response, leaving any a route set itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = scope["path"].startswith(_DOCS)
        added = {
            **_ALWAYS,
            "Content-Security-Policy": DOCS_CONTENT_SECURITY_POLICY
            if docs
            else CONTENT_SECURITY_POLICY,
        }
        if scope.get("scheme") == "https":
            added["Strict-Transport-Security"] = STRICT_TRANSPORT_SECURITY

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in added.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
