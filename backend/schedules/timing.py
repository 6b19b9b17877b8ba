"""Cron and interval arithmetic, in the schedule's own time zone (DST included)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, available_timezones

from cron_descriptor import get_description
from croniter import croniter

from backend.errors import Invalid


def check_timezone(name: str) -> str:
    if name not in _zones():
        raise Invalid(
            f"unknown time zone {name!r} (use an IANA name like 'Europe/Oslo')", param="timezone"
        )
    return name


def _zones() -> set[str]:
    return available_timezones() | {"UTC"}


def check_cron(expression: str) -> str:
    fields = expression.split()
    if len(fields) != 5 or not croniter.is_valid(expression):
        raise Invalid(
            f"invalid cron expression {expression!r}: use five fields, "
            "minute hour day-of-month month day-of-week (e.g. '0 2 * * 1')",
            param="cron",
        )
    return expression


def next_after(
    after: datetime, *, cron: str | None, interval_s: int | None, timezone: str
) -> datetime:
    """The first occurrence strictly after `after` (UTC in, UTC out)."""
    if cron:
        local = after.astimezone(ZoneInfo(timezone))
        nxt: datetime = croniter(cron, local).get_next(datetime)
        return nxt.astimezone(UTC)
    assert interval_s is not None
    return after + timedelta(seconds=interval_s)


def upcoming(
    start: datetime, *, cron: str | None, interval_s: int | None, timezone: str, count: int
) -> list[datetime]:
    out: list[datetime] = []
    moment = start
    for _ in range(count):
        moment = next_after(moment, cron=cron, interval_s=interval_s, timezone=timezone)
        out.append(moment)
    return out


def describe(*, cron: str | None, interval_s: int | None, timezone: str) -> str:
    if cron:
        return f"{get_description(cron)} ({timezone})"
    assert interval_s is not None
    if interval_s % 3600 == 0:
        return f"Every {interval_s // 3600} hour(s)"
    if interval_s % 60 == 0:
        return f"Every {interval_s // 60} minute(s)"
    return f"Every {interval_s} second(s)"
