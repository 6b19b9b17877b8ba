"""Process logs: text for people, or one JSON object per line for log pipelines.

Every record carries the id of the request or job it was logged for (context variables set by
the request middleware and by `run_job`), and secrets are masked in the message and traceback:
API keys, bearer tokens, passwords in URLs, and the secret settings of this process.
"""

from __future__ import annotations

import json
import logging
import logging.config
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from backend.config import Settings

request_id_var: ContextVar[str | None] = ContextVar("fastslow_request_id", default=None)
job_id_var: ContextVar[str | None] = ContextVar("fastslow_job_id", default=None)

MASK = "***"
# fastslow API keys, bearer credentials, other Authorization values, and passwords in URLs
# (database, broker): masked wherever they appear, in case some code logs one by mistake.
_PATTERNS = (
    (re.compile(r"fsk_[A-Za-z0-9_\-]+"), "fsk_" + MASK),
    (re.compile(r"(?i)\b((?:bearer|basic)\s+)[^\s'\",]+"), r"\g<1>" + MASK),
    (
        re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)(?!(?:bearer|basic)\b)[^\s'\",]+"),
        r"\g<1>" + MASK,
    ),
    (re.compile(r"(://[^/\s:@]+:)[^@\s/]+@"), r"\g<1>" + MASK + "@"),
)
_SECRET_SETTINGS = ("platform_key", "engine_api_key", "reflection_lm_api_key", "metrics_token")
# Attributes every LogRecord has; anything else was passed with `extra=` and is logged too.
_RECORD_FIELDS = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's coloured copy of the message
}


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with the given secret values and anything that looks like a credential masked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Tag every record logged inside with `job_id` (run_job wraps each job in it)."""
    token = job_id_var.set(job_id)
    try:
        yield
    finally:
        job_id_var.reset(token)


class ContextFilter(logging.Filter):
    """Adds the current `request_id` and `job_id` to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.job_id = job_id_var.get()
        return True


class TextFormatter(logging.Formatter):
    """`time level logger [ids]: message`, secrets masked."""

    def __init__(self, secrets: list[str] | None = None) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(ids)s: %(message)s")
        self.secrets = [s for s in secrets or [] if s]

    def format(self, record: logging.LogRecord) -> str:
        ids = [
            f"{name}={value}"
            for name in ("request_id", "job_id")
            if (value := getattr(record, name, None))
        ]
        record.ids = f" [{' '.join(ids)}]" if ids else ""
        return redact(super().format(record), self.secrets)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, ids, `extra` fields and the
    exception, secrets masked."""

    def __init__(self, secrets: list[str] | None = None) -> None:
        super().__init__()
        self.secrets = [s for s in secrets or [] if s]

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.process,  # several API or worker processes share a container
            "message": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name not in _RECORD_FIELDS and name != "ids" and value is not None:
                payload[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            payload["exception"] = record.exc_text
        if record.stack_info:
            payload["stack"] = self.formatStack(record.stack_info)
        return redact(json.dumps(payload, default=str), self.secrets)


def secrets_of(settings: Settings) -> list[str]:
    values = (getattr(settings, name) for name in _SECRET_SETTINGS)
    return [v.get_secret_value() for v in values if v is not None]


# What a person at a console does not need every few seconds: beat's ticks, Celery's line per
# received and finished task (housekeeping runs each second), one line per HTTP request (the UI
# polls), Alembic's plugin list. The text console at INFO (a calm console) shows these at DEBUG
# only; the JSON log keeps them at INFO.
CHATTY_LOGGERS = (
    "celery.beat",
    "celery.app.trace",
    "celery.worker.strategy",
    "fastslow.access",
    "httpx",
    "alembic.runtime.plugins",
)


def calm_console(settings: Settings, level: str | None = None) -> bool:
    """Text logs at INFO, unless turned off (`log_calm`): what a person reads at a console."""
    root_level = level or os.environ.get("FASTSLOW_LOG_LEVEL", "INFO")
    return settings.log_calm and settings.log_format == "text" and root_level.upper() == "INFO"


def logging_config(settings: Settings, level: str | None = None) -> dict[str, Any]:
    """A `logging.config.dictConfig` dict; uvicorn applies it in each of its worker processes."""
    formatter = JsonFormatter if settings.log_format == "json" else TextFormatter
    root_level = level or os.environ.get("FASTSLOW_LOG_LEVEL", "INFO")
    quiet = {name: {"level": "WARNING"} for name in CHATTY_LOGGERS}
    if not calm_console(settings, level):
        quiet = {}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}},
        "formatters": {"default": {"()": formatter, "secrets": secrets_of(settings)}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "default",
                "filters": ["context"],
            }
        },
        "root": {"level": root_level.upper(), "handlers": ["default"]},
        "loggers": {
            # uvicorn's own records go through the root handler; its access log is replaced by
            # `fastslow.access` (route templates, request ids, no query strings).
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": False},
            **quiet,
        },
    }


def configure_logging(settings: Settings) -> None:
    logging.config.dictConfig(logging_config(settings))
