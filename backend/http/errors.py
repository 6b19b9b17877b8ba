"""One mapping from failures to HTTP: domain errors keep their status; `/v1/*` answers in
the OpenAI error shape, `/api/*` in FastAPI's `{"detail": ...}`. Nothing becomes a bare 500:
unexpected errors are logged and answered with a JSON 500, an unreachable database with 503."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from backend.db import is_unavailable
from backend.errors import DomainError

logger = logging.getLogger(__name__)

_OPENAI_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def _is_openai(request: Request) -> bool:
    return request.url.path.startswith("/v1/") or request.url.path == "/v1"


def error_response(
    request: Request,
    status: int,
    message: str,
    *,
    code: str,
    param: str | None = None,
    headers: dict[str, str] | None = None,
    detail: Any = None,
) -> JSONResponse:
    if _is_openai(request):
        # OpenAI answers every invalid request with 400; its clients expect that.
        status = 400 if status == 422 else status
        kind = _OPENAI_TYPES.get(
            status, "server_error" if status >= 500 else "invalid_request_error"
        )
        body: dict[str, Any] = {
            "error": {"message": message, "type": kind, "param": param, "code": code}
        }
    else:
        body = {"detail": detail if detail is not None else message, "code": code}
        if param is not None:
            body["param"] = param
    return JSONResponse(jsonable_encoder(body), status_code=status, headers=headers)


def _validation_message(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
    param = ".".join(loc) or None
    if first.get("type") == "json_invalid":
        return "the request body is not valid JSON", None
    message = str(first.get("msg", "invalid request"))
    return (f"{param}: {message}" if param else message), param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def domain_error(request: Request, exc: DomainError) -> JSONResponse:
        headers = None
        if exc.retry_after_s is not None:
            headers = {"Retry-After": str(exc.retry_after_s)}
        return error_response(
            request, exc.status_code, exc.message, code=exc.code, param=exc.param, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{k: v for k, v in e.items() if k != "input"} for e in exc.errors()]
        message, param = _validation_message(errors)
        if _is_openai(request):
            return error_response(request, 400, message, code="invalid_request", param=param)
        return error_response(request, 422, message, code="invalid_value", detail=errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(
            request,
            exc.status_code,
            str(exc.detail),
            code=_HTTP_CODES.get(exc.status_code, "http_error"),
            headers=dict(exc.headers) if exc.headers else None,
        )

    @app.exception_handler(SQLAlchemyError)
    async def database_error(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        # Connection refused or lost, server restarting, lock or pool timeouts: retry soon.
        if is_unavailable(exc):
            logger.error("database unavailable: %s", exc)
            return error_response(
                request,
                503,
                "the database is unavailable",
                code="unavailable",
                headers={"Retry-After": "5"},
            )
        if isinstance(exc, DataError):
            # The database refused a value the request carried (a NUL character, a number out
            # of a column's range): the input is at fault, not the server.
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else "invalid value"
            return error_response(
                request, 422, f"a value cannot be stored: {reason}", code="invalid_value"
            )
        logger.exception("database error")
        return error_response(request, 500, "internal error", code="internal_error")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(request, 500, "internal error", code="internal_error")

    _document_error_shape(app)


def _document_error_shape(app: FastAPI) -> None:
    """FastAPI documents every 422 as its list of validation errors, but a domain error
    (`Invalid`) is a 422 whose `detail` is a sentence: document the body as it is sent."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schemas = schema.get("components", {}).get("schemas", {})
        if "HTTPValidationError" in schemas:
            schemas["HTTPValidationError"] = {
                "title": "HTTPValidationError",
                "type": "object",
                "properties": {
                    "detail": {
                        "title": "Detail",
                        "anyOf": [
                            {"type": "string"},
                            {
                                "type": "array",
                                "items": {"$ref": "#/components/schemas/ValidationError"},
                            },
                        ],
                    },
                    "code": {"title": "Code", "type": "string"},
                    "param": {"title": "Param", "type": "string"},
                },
                "required": ["detail", "code"],
            }
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
