"""Agents of a tenant. Every function is scoped by `tenant_id`: another tenant's agent is
indistinguishable from one that does not exist."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.agents.models import Activation, Agent
from backend.agents.schemas import FastLoopSettings, SlowLoopSettings
from backend.errors import Conflict, Invalid, NotFound
from backend.prompts.models import PromptSource, PromptVersion
from backend.scoring.spec import RewardSpec


def create_agent(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    slug: str,
    system_prompt: str,
    demonstrations: Sequence[dict[str, Any]],
    base_model: str | None,
    served_base_model: str,
    reward: RewardSpec | None,
    max_tokens_cap: int,
    max_prompt_tokens: int | None = None,
    description: str = "",
    fast_loop: FastLoopSettings | None = None,
    slow_loop: SlowLoopSettings | None = None,
    created_by: uuid.UUID | None = None,
) -> Agent:
    """Create an agent with prompt version 1 live, in one transaction."""
    model = base_model or served_base_model
    if model != served_base_model:
        raise Invalid(
            f"base model {model!r} is not served by this deployment "
            f"(it serves {served_base_model!r})",
            param="base_model",
        )
    if get_agent_or_none(session, tenant_id=tenant_id, slug=slug) is not None:
        raise Conflict(f"an agent with slug {slug!r} already exists", param="slug")
    agent = Agent(
        tenant_id=tenant_id,
        slug=slug,
        description=description,
        base_model=model,
        reward=reward.model_dump(mode="json") if reward else {},
        max_tokens_cap=max_tokens_cap,
        max_prompt_tokens=max_prompt_tokens,
        fast_loop=fast_loop.model_dump() if fast_loop else {},
        slow_loop=slow_loop.model_dump() if slow_loop else {},
    )
    session.add(agent)
    try:
        session.flush()
        first = PromptVersion(
            tenant_id=tenant_id,
            agent_id=agent.id,
            version=1,
            instructions=system_prompt,
            demonstrations=[dict(turn) for turn in demonstrations],
            source=PromptSource.MANUAL,
            note="initial version",
            created_by=created_by,
        )
        session.add(first)
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"an agent with slug {slug!r} already exists", param="slug") from None
    agent.live_prompt_version_id = first.id
    record_activation(
        session,
        agent=agent,
        kind="prompt",
        from_version=None,
        to_version=1,
        reason="agent created",
        actor_key_id=created_by,
    )
    session.commit()
    session.refresh(agent)
    return agent


def fast_loop_settings(agent: Agent) -> FastLoopSettings:
    return FastLoopSettings.model_validate(agent.fast_loop or {})


def slow_loop_settings(agent: Agent) -> SlowLoopSettings:
    return SlowLoopSettings.model_validate(agent.slow_loop or {})


S = TypeVar("S", FastLoopSettings, SlowLoopSettings)


def _merged(current: S, patch: S) -> S:
    """`current` with the fields the client sent in `patch` (the rest keep their values)."""
    return type(current).model_validate(
        {**current.model_dump(), **patch.model_dump(exclude_unset=True)}
    )


def get_agent_or_none(session: Session, *, tenant_id: uuid.UUID, slug: str) -> Agent | None:
    query = select(Agent).where(Agent.tenant_id == tenant_id, Agent.slug == slug)
    return session.scalars(query).unique().one_or_none()


def get_agent(session: Session, *, tenant_id: uuid.UUID, slug: str) -> Agent:
    agent = get_agent_or_none(session, tenant_id=tenant_id, slug=slug)
    if agent is None:
        raise NotFound(f"agent {slug!r} not found", param="model")
    return agent


def agent_by_id(session: Session, *, tenant_id: uuid.UUID, agent_id: uuid.UUID | None) -> Agent:
    """The agent a job names, within the job's tenant (jobs carry both ids)."""
    if agent_id is None:
        raise NotFound("the job names no agent")
    return (
        session.scalars(select(Agent).where(Agent.id == agent_id, Agent.tenant_id == tenant_id))
        .unique()
        .one()
    )


def list_agents(session: Session, *, tenant_id: uuid.UUID) -> list[Agent]:
    query = select(Agent).where(Agent.tenant_id == tenant_id).order_by(Agent.slug)
    return list(session.scalars(query).unique())


def update_agent(
    session: Session,
    *,
    agent: Agent,
    description: str | None = None,
    reward: RewardSpec | None = None,
    max_tokens_cap: int | None = None,
    max_prompt_tokens: int | None = None,
    fast_loop: FastLoopSettings | None = None,
    slow_loop: SlowLoopSettings | None = None,
) -> Agent:
    """Change what is given (None: unchanged); `max_prompt_tokens=0` removes the cap."""
    if fast_loop is not None:
        agent.fast_loop = _merged(fast_loop_settings(agent), fast_loop).model_dump()
    if slow_loop is not None:
        agent.slow_loop = _merged(slow_loop_settings(agent), slow_loop).model_dump()
    if description is not None:
        agent.description = description
    if reward is not None:
        agent.reward = reward.model_dump(mode="json")
    if max_tokens_cap is not None:
        agent.max_tokens_cap = max_tokens_cap
    if max_prompt_tokens is not None:
        agent.max_prompt_tokens = max_prompt_tokens or None
    session.commit()
    session.refresh(agent)
    return agent


def record_activation(
    session: Session,
    *,
    agent: Agent,
    kind: str,
    from_version: int | None,
    to_version: int | None,
    reason: str = "",
    actor_key_id: uuid.UUID | None = None,
    job_id: uuid.UUID | None = None,
) -> Activation:
    """Add the audit row of a pointer move; the caller commits it with the move itself."""
    row = Activation(
        tenant_id=agent.tenant_id,
        agent_id=agent.id,
        kind=kind,
        from_version=from_version,
        to_version=to_version,
        reason=reason,
        actor_key_id=actor_key_id,
        job_id=job_id,
    )
    session.add(row)
    return row


def list_activations(session: Session, *, agent: Agent, limit: int = 100) -> list[Activation]:
    query = (
        select(Activation)
        .where(Activation.agent_id == agent.id, Activation.tenant_id == agent.tenant_id)
        .order_by(Activation.created_at.desc())
        .limit(limit)
    )
    return list(session.scalars(query))
