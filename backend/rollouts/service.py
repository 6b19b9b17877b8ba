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
from backend.db import utcnow
from backend.errors import Conflict, NotFound
from backend.limits.service import charge_tokens
from backend.prompts.models import PromptVersion
from backend.rollouts.models import Feedback, Rollout


def record_rollout(session: Session, rollout: Rollout) -> Rollout:
    """Store a served answer, and charge its tokens to the tenant's quota in the same
    transaction (so a stored answer is charged exactly once). The prompt counts as well as the
    completion: reading a long context is work the tenant caused too."""
    session.add(rollout)
    # `or 0`: a Rollout built without counts has None until the insert applies defaults.
    tokens = (rollout.prompt_tokens or 0) + (rollout.completion_tokens or 0)
    charge_tokens(session, tenant_id=rollout.tenant_id, tokens=tokens)
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
    """Store a rating; returns (feedback, created).

    One rating per completion per API key: a second rating by the same key updates the first
    (created is False), so one key cannot stuff votes; the update keeps `created_at`, so it is
    no new feedback for the fast loop's trigger. A repeated Idempotency-Key returns its rating
    unchanged, and a different payload under a used key is a conflict."""
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
    agent_id = rollout.agent_id
    for attempt in (1, 2):
        current = _by_rater(session, tenant_id, completion_id, api_key_id)
        if current is not None:
            for name, value in fields.items():
                setattr(current, name, value)
            if idempotency_key is not None:
                current.idempotency_key = idempotency_key
            current.updated_at = utcnow()
            feedback, created = current, False
        else:
            feedback = Feedback(
                tenant_id=tenant_id,
                agent_id=agent_id,
                idempotency_key=idempotency_key,
                api_key_id=api_key_id,
                **fields,
            )
            session.add(feedback)
            created = True
        try:
            session.commit()
        except IntegrityError:
            # A concurrent request won the race: the same Idempotency-Key (so this is its
            # replay), or the same key's first rating of this completion (so update that).
            session.rollback()
            if idempotency_key is not None:
                existing = _by_idempotency_key(session, tenant_id, idempotency_key)
                if existing is not None:
                    return _replay(existing, fields), False
            if attempt == 2 or not created or api_key_id is None:
                raise
            continue
        return feedback, created
    raise AssertionError("unreachable")


def _by_rater(
    session: Session, tenant_id: uuid.UUID, completion_id: str, api_key_id: uuid.UUID | None
) -> Feedback | None:
    """The rating this key already gave the completion. Ratings without a key (internal
    callers) are not tied to a rater and are never merged."""
    if api_key_id is None:
        return None
    return session.scalar(
        select(Feedback).where(
            Feedback.tenant_id == tenant_id,
            Feedback.rollout_id == completion_id,
            Feedback.api_key_id == api_key_id,
        )
    )


def _by_idempotency_key(session: Session, tenant_id: uuid.UUID, key: str) -> Feedback | None:
    return session.scalar(
        select(Feedback).where(Feedback.tenant_id == tenant_id, Feedback.idempotency_key == key)
    )


def _replay(existing: Feedback, fields: dict[str, Any]) -> Feedback:
    if any(getattr(existing, name) != value for name, value in fields.items()):
        raise Conflict("this Idempotency-Key was already used for a different feedback")
    return existing
