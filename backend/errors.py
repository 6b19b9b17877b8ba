"""Domain errors. Services raise these; the API maps each to one HTTP status (api/errors.py)."""

from __future__ import annotations


class DomainError(Exception):
    status_code = 400
    code = "invalid_request"
    # Sent as `Retry-After` when set: when trying again may succeed.
    retry_after_s: int | None = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class NotFound(DomainError):
    status_code = 404
    code = "not_found"


class Conflict(DomainError):
    status_code = 409
    code = "conflict"


class Invalid(DomainError):
    status_code = 422
    code = "invalid_value"


class Forbidden(DomainError):
    status_code = 403
    code = "forbidden"


class Unavailable(DomainError):
    """A dependency (the engine, the broker) is down; the client should retry."""

    status_code = 503
    code = "unavailable"

    def __init__(self, message: str, *, retry_after_s: int = 5) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RateLimited(DomainError):
    """The tenant sent more requests than its rate limit allows in the current window."""

    status_code = 429
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QuotaExceeded(RateLimited):
    """The tenant used up its token quota for the current window."""

    code = "insufficient_quota"


class ContextTooLong(Invalid):
    """A chat request's prompt (the agent's context and the messages) does not fit the
    context limit; refused before anything is sent to the engine."""

    code = "context_length_exceeded"


class Unauthorized(DomainError):
    status_code = 401
    code = "invalid_api_key"


class PayloadTooLarge(DomainError):
    status_code = 413
    code = "payload_too_large"


class EngineFailure(DomainError):
    """The model engine answered with an error that retrying will not fix."""

    status_code = 502
    code = "engine_error"
