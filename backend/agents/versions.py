"""Numbered, immutable versions of an agent's artifacts (prompt versions, adapter versions):
one place for how numbers are given out and how versions are looked up."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.adapters.models import AdapterVersion
from backend.agents.models import Agent
from backend.errors import Conflict, NotFound
from backend.prompts.models import PromptVersion

V = TypeVar("V", PromptVersion, AdapterVersion)

_RETRIES = 3


def add_next_version(
    session: Session,
    model: type[V],
    *,
    agent: Agent,
    make: Callable[[int], V],
    then: Callable[[V], None] | None = None,
) -> V:
    """Insert `make(n)` with n the agent's next version number, run `then` on it in the same
    transaction, and commit. A concurrent writer that took n first makes us take n + 1."""
    for _ in range(_RETRIES):
        latest = session.scalar(select(func.max(model.version)).where(model.agent_id == agent.id))
        row = make((latest or 0) + 1)
        session.add(row)
        try:
            session.flush()
        except IntegrityError:
            session.rollback()
            session.refresh(agent)
            continue
        if then is not None:
            then(row)
        session.commit()
        return row
    raise Conflict("too many concurrent changes to this agent's versions; try again")


def list_versions(session: Session, model: type[V], *, agent: Agent) -> list[V]:
    query = (
        select(model)
        .where(model.agent_id == agent.id, model.tenant_id == agent.tenant_id)
        .order_by(model.version.desc())
    )
    return list(session.scalars(query))


def get_version(session: Session, model: type[V], *, agent: Agent, version: int) -> V:
    row = session.scalar(
        select(model).where(
            model.agent_id == agent.id,
            model.tenant_id == agent.tenant_id,
            model.version == version,
        )
    )
    if row is None:
        kind = "prompt" if model is PromptVersion else "adapter"
        raise NotFound(f"agent {agent.slug!r} has no {kind} version {version}")
    return row
