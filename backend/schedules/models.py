from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from backend.db import Base, new_id, utcnow


class Schedule(Base):
    """When an agent's slow loop runs by itself: a cron expression in a time zone, or an
    interval; and the conditions under which a due run is skipped. One per agent."""

    __tablename__ = "schedules"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), index=True)
    agent_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agents.id"), unique=True)
    enabled: Mapped[bool] = mapped_column(default=True)
    cron: Mapped[str | None] = mapped_column(String(100), default=None)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    interval_s: Mapped[int | None] = mapped_column(default=None)
    min_new_rollouts: Mapped[int] = mapped_column(default=0)
    min_new_feedback: Mapped[int] = mapped_column(default=0)
    skip_if_unchanged: Mapped[bool] = mapped_column(default=True)
    # The next time it is due (UTC). Firing moves it forward with a compare-and-set, so two
    # beats (or two ticks) can never fire the same occurrence twice.
    next_run_at: Mapped[datetime] = mapped_column(index=True)
    last_fired_at: Mapped[datetime | None] = mapped_column(default=None)
    last_job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id"), default=None)
    last_outcome: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
