from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from backend.db import Base, new_id, str_enum, utcnow


class AdapterStatus(enum.StrEnum):
    READY = "ready"  # stored and valid; may or may not be live
    FAILED = "failed"  # could not be loaded or probed; never live


class AdapterSource(enum.StrEnum):
    UPLOAD = "upload"
    TRAINING = "training"


class AdapterVersion(Base):
    """An immutable LoRA adapter of an agent, stored under `path` (a peft adapter directory)."""

    __tablename__ = "adapter_versions"
    __table_args__ = (UniqueConstraint("agent_id", "version"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), index=True)
    agent_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agents.id"), index=True)
    version: Mapped[int]
    path: Mapped[str] = mapped_column(String(1000))
    base_model: Mapped[str] = mapped_column(String(200))
    source: Mapped[AdapterSource] = mapped_column(str_enum(AdapterSource))
    status: Mapped[AdapterStatus] = mapped_column(
        str_enum(AdapterStatus), default=AdapterStatus.READY
    )
    status_reason: Mapped[str] = mapped_column(Text, default="")
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("adapter_versions.id"), default=None
    )
    job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id"), default=None)
    note: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("api_keys.id"), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def engine_name(self) -> str:
        """The name the engine serves this version under: unique per version, never reused."""
        return f"lora-{self.id.hex}"
