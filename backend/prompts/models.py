from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from backend.db import Base, new_id, str_enum, utcnow


class PromptSource(enum.StrEnum):
    MANUAL = "manual"
    OPTIMIZER = "optimizer"
    ROLLBACK = "rollback"


class PromptVersion(Base):
    """An immutable context of an agent: instructions plus demonstration turns.

    `demonstrations` is a list of `{"role": "user"|"assistant", "content": str}` turns that are
    sent as real conversation turns before the user's messages (a small model follows examples
    given as turns far better than examples pasted into the system text).
    """

    __tablename__ = "prompt_versions"
    __table_args__ = (UniqueConstraint("agent_id", "version"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), index=True)
    agent_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agents.id"), index=True)
    version: Mapped[int]
    instructions: Mapped[str] = mapped_column(Text)
    demonstrations: Mapped[list[dict[str, Any]]] = mapped_column(default=list)
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("prompt_versions.id"), default=None
    )
    source: Mapped[PromptSource] = mapped_column(str_enum(PromptSource))
    scores: Mapped[dict[str, Any]] = mapped_column(default=dict)
    note: Mapped[str] = mapped_column(Text, default="")
    job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id"), default=None)
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("api_keys.id"), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
