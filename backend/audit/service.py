"""The audit log of admin actions: who did what to which target, when, and why.

A service that performs an action adds its event with `add_event` before it commits, so the
event and the action land together; a view that calls a service which commits on its own logs
the event right after with `log_event`. Moves of live versions are `Activation` rows, written
with the move itself; `list_entries` reads both tables as one log.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.agents.models import Activation, Agent
from backend.audit.models import AuditEvent

ActorKind = Literal["platform", "key", "job", "system"]


@dataclass(frozen=True)
class Actor:
    """Who acts, and the reason they gave: a tenant's key, or the platform key (`key_id` None)."""

    key_id: uuid.UUID | None
    reason: str = ""


def add_event(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    actor: Actor,
    action: str,
    target: str,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add the event to the session; the caller commits it with the action."""
    event = AuditEvent(
        tenant_id=tenant_id,
        actor_key_id=actor.key_id,
        action=action,
        target=target,
        reason=actor.reason,
        details=details or {},
    )
    session.add(event)
    return event


def log_event(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    actor: Actor,
    action: str,
    target: str,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Record an action that its service has committed already."""
    event = add_event(
        session, tenant_id=tenant_id, actor=actor, action=action, target=target, details=details
    )
    session.commit()
    return event


@dataclass(frozen=True)
class AuditEntry:
    """One line of a tenant's audit log, from an `AuditEvent` or an `Activation`."""

    id: uuid.UUID
    at: datetime
    actor: ActorKind
    actor_key_id: uuid.UUID | None
    job_id: uuid.UUID | None
    action: str
    target: str
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


def _from_event(event: AuditEvent) -> AuditEntry:
    return AuditEntry(
        id=event.id,
        at=event.created_at,
        actor="key" if event.actor_key_id is not None else "platform",
        actor_key_id=event.actor_key_id,
        job_id=None,
        action=event.action,
        target=event.target,
        reason=event.reason,
        details=event.details,
    )


def _from_activation(activation: Activation, slug: str) -> AuditEntry:
    actor: ActorKind = "system"
    if activation.actor_key_id is not None:
        actor = "key"
    elif activation.job_id is not None:
        actor = "job"
    return AuditEntry(
        id=activation.id,
        at=activation.created_at,
        actor=actor,
        actor_key_id=activation.actor_key_id,
        job_id=activation.job_id,
        action=f"{activation.kind}.activate",
        target=f"agent:{slug}",
        reason=activation.reason,
        details={"from_version": activation.from_version, "to_version": activation.to_version},
    )


def list_entries(
    session: Session, *, tenant_id: uuid.UUID, limit: int = 50, before: datetime | None = None
) -> list[AuditEntry]:
    """The tenant's audit log, newest first; page back with `before` (the oldest `at` seen)."""
    events = select(AuditEvent).where(AuditEvent.tenant_id == tenant_id)
    activations = (
        select(Activation, Agent.slug)
        .join(Agent, Agent.id == Activation.agent_id)
        .where(Activation.tenant_id == tenant_id)
    )
    if before is not None:
        events = events.where(AuditEvent.created_at < before)
        activations = activations.where(Activation.created_at < before)
    events = events.order_by(AuditEvent.created_at.desc()).limit(limit)
    activations = activations.order_by(Activation.created_at.desc()).limit(limit)
    entries = [_from_event(e) for e in session.scalars(events)]
    entries += [_from_activation(a, slug) for a, slug in session.execute(activations).tuples()]
    entries.sort(key=lambda entry: entry.at, reverse=True)
    return entries[:limit]
