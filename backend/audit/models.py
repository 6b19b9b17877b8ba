from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from backend.db import Base, new_id, utcnow


class AuditEvent(Base):
    """One admin action: who (a tenant's key, or the platform key), what (action and target),
    when, and why (the reason the caller gave).

    Moves of an agent's live prompt or adapter are `Activation` rows (written with the move);
    the audit log reads both, so they are not recorded twice.
    """

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_tenant_id_created_at", "tenant_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    # None: the platform key acted.
    actor_key_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("api_keys.id"), default=None)
    action: Mapped[str] = mapped_column(String(64))  # e.g. "key.revoke"
    target: Mapped[str] = mapped_column(String(200))  # e.g. "key:<uuid>", "agent:support"
    reason: Mapped[str] = mapped_column(String(2000), default="")
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
