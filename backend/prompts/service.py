"""Prompt versions: immutable contexts of an agent, and the live pointer that selects one."""

from __future__ import annotations

import difflib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from backend.agents.models import Agent
from backend.agents.service import record_activation
from backend.agents.versions import add_next_version, get_version, list_versions
from backend.prompts.models import PromptSource, PromptVersion


def create_prompt_version(
    session: Session,
    *,
    agent: Agent,
    instructions: str,
    demonstrations: Sequence[Mapping[str, Any]],
    source: PromptSource,
    parent_id: uuid.UUID | None,
    note: str = "",
    scores: dict[str, Any] | None = None,
    job_id: uuid.UUID | None = None,
    created_by: uuid.UUID | None = None,
    activate: bool,
) -> PromptVersion:
    """Add the next version of `agent`'s prompt (and make it live if `activate`), committed."""

    def make(number: int) -> PromptVersion:
        return PromptVersion(
            tenant_id=agent.tenant_id,
            agent_id=agent.id,
            version=number,
            instructions=instructions,
            demonstrations=[dict(turn) for turn in demonstrations],
            parent_id=parent_id,
            source=source,
            scores=scores or {},
            note=note,
            job_id=job_id,
            created_by=created_by,
        )

    def go_live(row: PromptVersion) -> None:
        if activate:
            _point_to(session, agent, row, reason=note, actor_key_id=created_by, job_id=job_id)

    return add_next_version(session, PromptVersion, agent=agent, make=make, then=go_live)


def list_prompt_versions(session: Session, *, agent: Agent) -> list[PromptVersion]:
    return list_versions(session, PromptVersion, agent=agent)


def get_prompt_version(session: Session, *, agent: Agent, version: int) -> PromptVersion:
    return get_version(session, PromptVersion, agent=agent, version=version)


def activate_prompt_version(
    session: Session,
    *,
    agent: Agent,
    version: int,
    reason: str = "",
    actor_key_id: uuid.UUID | None = None,
    job_id: uuid.UUID | None = None,
) -> PromptVersion:
    """Move the live pointer to an existing version (rollback copies nothing)."""
    row = get_prompt_version(session, agent=agent, version=version)
    _point_to(session, agent, row, reason=reason, actor_key_id=actor_key_id, job_id=job_id)
    session.commit()
    return row


def _point_to(
    session: Session,
    agent: Agent,
    row: PromptVersion,
    *,
    reason: str,
    actor_key_id: uuid.UUID | None,
    job_id: uuid.UUID | None,
) -> None:
    record_activation(
        session,
        agent=agent,
        kind="prompt",
        from_version=agent.live_prompt_version,
        to_version=row.version,
        reason=reason,
        actor_key_id=actor_key_id,
        job_id=job_id,
    )
    agent.live_prompt_version_id = row.id


@dataclass(frozen=True)
class PromptDiff:
    a: PromptVersion
    b: PromptVersion
    instructions: list[str]  # unified diff lines
    demonstrations: list[str]


def _demonstration_lines(row: PromptVersion) -> list[str]:
    return [f"{turn['role']}: {turn['content']}" for turn in row.demonstrations]


def diff_prompt_versions(session: Session, *, agent: Agent, a: int, b: int) -> PromptDiff:
    """A unified diff of two versions' instructions and of their demonstration turns."""
    left = get_prompt_version(session, agent=agent, version=a)
    right = get_prompt_version(session, agent=agent, version=b)
    instructions = difflib.unified_diff(
        left.instructions.splitlines(),
        right.instructions.splitlines(),
        f"v{a}/instructions",
        f"v{b}/instructions",
        lineterm="",
    )
    demonstrations = difflib.unified_diff(
        _demonstration_lines(left),
        _demonstration_lines(right),
        f"v{a}/demonstrations",
        f"v{b}/demonstrations",
        lineterm="",
    )
    return PromptDiff(left, right, list(instructions), list(demonstrations))
