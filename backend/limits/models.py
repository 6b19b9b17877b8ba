from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from backend.db import Base, utcnow


class TenantLimits(Base):
    """A tenant's own limits, set with the platform key. A null field takes the default from
    the settings; 0 means no limit."""

    __tablename__ = "tenant_limits"

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    requests_per_minute: Mapped[int | None] = mapped_column(default=None)
    tokens_per_day: Mapped[int | None] = mapped_column(BigInteger, default=None)
    jobs_per_day: Mapped[int | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class UsageCounter(Base):
    """What a tenant used in one fixed window (requests in a minute, prompt and generated
    tokens in a day, jobs started in a day). Every API replica adds to the same row with one
    atomic upsert."""

    __tablename__ = "usage_counters"

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    kind: Mapped[str] = mapped_column(
        String(16), primary_key=True
    )  # "requests" | "tokens" | "jobs"
    # Start of the window in seconds since the epoch (UTC), a multiple of the window length.
    window_start: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    used: Mapped[int] = mapped_column(BigInteger, default=0)
