"""Rollouts (every answer served) and the feedback users give on them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.adapters.models import AdapterVersion
from backend.agents.models import Agent
from backend.errors import Conflict, NotFound
from backend.limits.service import charge_tokens
from backend.prompts.models import PromptVersion
from backend.rollouts.models import Feedback, Rollout


def record_rollout(session: Session, rollout: Rollout) -> Rollout:
    """Store a served answer, and charge its generated tokens to the tenant's quota in the
    same transaction (so a stored answer is charged exactly once)."""
    session.add(rollout)
    charge_tokens(session, tenant_id=rollout.tenant_id, tokens=rollout.completion_tokens)
    session.commit()
    return rollout


@dataclass(frozen=True)
class RolloutView:
    """A rollout with the names and numbers a person reads instead of ids."""

    rollout: Rollout
    agent: str
    prompt_version: int | None
    adapter_version: int | None
    feedback: list[Feedback]


def list_rollouts(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    agent_slug: str | None = None,
    since: datetime | None = None,
    rated: bool | None = None,
    min_score: float | None = None,
    max_score: float | None = None,
    limit: int = 50,
    before: datetime | None = None,
) -> list[RolloutView]:
    query = (
        select(Rollout, Agent.slug, PromptVersion.version, AdapterVersion.version)
        .join(Agent, Agent.id == Rollout.agent_id)
        .outerjoin(PromptVersion, PromptVersion.id == Rollout.prompt_version_id)
        .outerjoin(AdapterVersion, AdapterVersion.id == Rollout.adapter_version_id)
        .where(Rollout.tenant_id == tenant_id)
        .order_by(Rollout.created_at.desc())
        .limit(limit)
    )
    if agent_slug is not None:
        query = query.where(Agent.slug == agent_slug)
    if since is not None:
        query = query.where(Rollout.created_at >= since)
    if before is not None:
        query = query.where(Rollout.created_at < before)
    rated_ids = select(Feedback.rollout_id).where(Feedback.tenant_id == tenant_id)
    if min_score is not None or max_score is not None:
        scored = rated_ids
        if min_score is not None:
            scored = scored.where(Feedback.score >= min_score)
        if max_score is not None:
            scored = scored.where(Feedback.score <= max_score)
        query = query.where(Rollout.id.in_(scored))
    if rated is True:
        query = query.where(Rollout.id.in_(rated_ids))
    elif rated is False:
        query = query.where(Rollout.id.not_in(rated_ids))
    rows = session.execute(query).all()
    feedback = _feedback_of(session, tenant_id, [r[0].id for r in rows])
    return [
        RolloutView(rollout, slug, pv, av, feedback.get(rollout.id, []))
        for rollout, slug, pv, av in rows
    ]


def get_rollout(session: Session, *, tenant_id: uuid.UUID, rollout_id: str) -> RolloutView:
    query = (
        select(Rollout, Agent.slug, PromptVersion.version, AdapterVersion.version)
        .join(Agent, Agent.id == Rollout.agent_id)
        .outerjoin(PromptVersion, PromptVersion.id == Rollout.prompt_version_id)
        .outerjoin(AdapterVersion, AdapterVersion.id == Rollout.adapter_version_id)
        .where(Rollout.tenant_id == tenant_id, Rollout.id == rollout_id)
    )
    row = session.execute(query).first()
    if row is None:
        raise NotFound(f"completion {rollout_id!r} not found", param="completion_id")
    rollout, slug, pv, av = row
    feedback = _feedback_of(session, tenant_id, [rollout.id]).get(rollout.id, [])
    return RolloutView(rollout, slug, pv, av, feedback)


def _feedback_of(
    session: Session, tenant_id: uuid.UUID, rollout_ids: Sequence[str]
) -> dict[str, list[Feedback]]:
    if not rollout_ids:
        return {}
    query = (
        select(Feedback)
        .where(Feedback.tenant_id == tenant_id, Feedback.rollout_id.in_(rollout_ids))
        .order_by(Feedback.created_at)
    )
    grouped: dict[str, list[Feedback]] = {}
    for item in session.scalars(query):
        grouped.setdefault(item.rollout_id, []).append(item)
    return grouped


def submit_feedback(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    completion_id: str,
    score: float,
    comment: str | None,
    correction: str | None,
    idempotency_key: str | None,
    api_key_id: uuid.UUID | None,
) -> tuple[Feedback, bool]:
    """Store a rating; returns (feedback, created). A repeated Idempotency-Key returns the
    first rating unchanged, and a different payload under a used key is a conflict."""
    fields: dict[str, Any] = {
        "rollout_id": completion_id,
        "score": score,
        "comment": comment,
        "correction": correction,
    }
    if idempotency_key is not None:
        existing = _by_idempotency_key(session, tenant_id, idempotency_key)
        if existing is not None:
            return _replay(existing, fields), False
    rollout = session.scalar(
        select(Rollout).where(Rollout.tenant_id == tenant_id, Rollout.id == completion_id)
    )
    if rollout is None:
        raise NotFound(f"completion {completion_id!r} not found", param="completion_id")
    feedback = Feedback(
        tenant_id=tenant_id,
        agent_id=rollout.agent_id,
        idempotency_key=idempotency_key,
        api_key_id=api_key_id,
        **fields,
    )
    session.add(feedback)
    try:
        session.commit()
    except IntegrityError:
        # Two requests with one key raced; the other one won, so this is a replay of it.
        session.rollback()
        if idempotency_key is None:
            raise
        existing = _by_idempotency_key(session, tenant_id, idempotency_key)
        if existing is None:
            raise
        return _replay(existing, fields), False
    return feedback, True


def _by_idempotency_key(session: Session, tenant_id: uuid.UUID, key: str) -> Feedback | None:
    return session.scalar(
        select(Feedback).where(Feedback.tenant_id == tenant_id, Feedback.idempotency_key == key)
    )


def _replay(existing: Feedback, fields: dict[str, Any]) -> Feedback:
    if any(getattr(existing, name) != value for name, value in fields.items()):
        raise Conflict("this Idempotency-Key was already used for a different feedback")
    return existing
