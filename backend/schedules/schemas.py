from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from backend.db import MAX_INT
from backend.errors import Invalid
from backend.schedules.timing import check_cron, check_timezone


class FastLoopTriggers(BaseModel):
    """The fast loop's own triggers (stored with the agent's fast-loop settings)."""

    model_config = ConfigDict(extra="forbid")
    pinned: bool | None = None
    min_new_feedback: int | None = Field(None, ge=1, le=100_000)
    max_wait_minutes: float | None = Field(None, gt=0, le=10_080)


class ScheduleWrite(BaseModel):
    """A cron expression in a time zone, or an interval; plus when a due run is skipped."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    cron: str | None = Field(None, description="Five fields, e.g. '0 2 * * 1' (Mondays 02:00).")
    timezone: str = Field("UTC", description="IANA time zone the cron expression is read in.")
    interval_s: int | None = Field(None, ge=1, le=366 * 86_400)
    min_new_rollouts: int = Field(
        0, ge=0, le=MAX_INT, description="Skip unless this many new rollouts."
    )
    min_new_feedback: int = Field(
        0, ge=0, le=MAX_INT, description="Skip unless this many new ratings."
    )
    skip_if_unchanged: bool = Field(True, description="Skip when nothing new since the last run.")
    fast_loop: FastLoopTriggers | None = None

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return None if value is None else _as_value_error(check_cron, value.strip())

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        return _as_value_error(check_timezone, value)

    @model_validator(mode="after")
    def _one_timing(self) -> ScheduleWrite:
        if (self.cron is None) == (self.interval_s is None):
            raise ValueError("give exactly one of `cron` and `interval_s`")
        return self


def _as_value_error(check: object, value: str) -> str:
    try:
        result: str = check(value)  # type: ignore[operator]
    except Invalid as exc:
        raise ValueError(exc.message) from None
    return result


class ScheduleRead(BaseModel):
    model_config = ConfigDict(
        from_attributes=True, json_schema_serialization_defaults_required=True
    )
    enabled: bool
    cron: str | None
    timezone: str
    interval_s: int | None
    min_new_rollouts: int
    min_new_feedback: int
    skip_if_unchanged: bool
    description: str
    next_runs: list[datetime] = Field(description="The next five times it is due (UTC).")
    last_fired_at: datetime | None
    last_outcome: str
    last_job_id: str | None
    fast_loop: FastLoopTriggers
