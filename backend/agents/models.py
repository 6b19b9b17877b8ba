from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from backend.db import Base, new_id, utcnow

if TYPE_CHECKING:
    from backend.adapters.models import AdapterVersion
    from backend.prompts.models import PromptVersion


class Agent(Base):
    """An agent of a tenant, addressed by its slug (the `model` of chat requests).

    The live prompt and adapter pointers are what serves traffic; moving them is activation.
    """

    __tablename__ = "agents"
    __table_args__ = (UniqueConstraint("tenant_id", "slug"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), index=True)
    slug: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(500), default="")
    base_model: Mapped[str] = mapped_column(String(200))
    reward: Mapped[dict[str, Any]] = mapped_column(default=dict)
    max_tokens_cap: Mapped[int]
    # The agent's own cap on a request's prompt tokens (its context plus the messages);
    # None: only the engine's window (`max_context_tokens`) limits it.
    max_prompt_tokens: Mapped[int | None] = mapped_column(default=None)
    # Fast-loop settings (`FastLoopSettings`); JSON so new knobs need no migration.
    fast_loop: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The fast loop's latest Pareto population of prompt versions, best first:
    # [{"prompt_version_id", "version", "score"}]. The slow loop samples contexts from it.
    population: Mapped[list[dict[str, Any]]] = mapped_column(default=list)
    # Slow-loop (LoRA RL) settings (`SlowLoopSettings`).
    slow_loop: Mapped[dict[str, Any]] = mapped_column(default=dict)
    live_prompt_version_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("prompt_versions.id", use_alter=True), default=None
    )
    live_adapter_version_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("adapter_versions.id", use_alter=True), default=None
    )
    # Loaded with the agent in one query: the serving path needs all three at once.
    live_prompt: Mapped[PromptVersion | None] = relationship(
        foreign_keys=[live_prompt_version_id], lazy="joined", viewonly=True
    )
    live_adapter: Mapped[AdapterVersion | None] = relationship(
        foreign_keys=[live_adapter_version_id], lazy="joined", viewonly=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    @property
    def live_prompt_version(self) -> int | None:
        return self.live_prompt.version if self.live_prompt is not None else None

    @property
    def live_adapter_version(self) -> int | None:
        return self.live_adapter.version if self.live_adapter is not None else None


class Activation(Base):
    """One move of an agent's live prompt or adapter pointer: who, when, from what, to what, why.

    This is the audit trail behind history and rollback; versions themselves never change.
    """

    __tablename__ = "activations"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), index=True)
    agent_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agents.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # "prompt" | "adapter"
    from_version: Mapped[int | None]
    to_version: Mapped[int | None]  # None: the adapter was switched off (base model serves)
    reason: Mapped[str] = mapped_column(String(2000), default="")
    actor_key_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("api_keys.id"), default=None)
    job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id"), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
