from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from backend.agents.deps import AgentDep
from backend.audit.deps import ActorDep, AuditDep
from backend.db import MAX_INT
from backend.http.deps import SessionDep
from backend.prompts import service
from backend.prompts.models import PromptSource, PromptVersion
from backend.prompts.schemas import (
    ActivationRequest,
    PromptDiffRead,
    PromptVersionCreate,
    PromptVersionRead,
)
from backend.tenants.deps import AdminDep

router = APIRouter(prefix="/agents/{slug}/prompts", tags=["prompts"])

Version = Annotated[int, Path(ge=1, le=MAX_INT)]


def _read(row: PromptVersion, live_id: object) -> PromptVersionRead:
    return PromptVersionRead.model_validate(row).model_copy(update={"live": row.id == live_id})


@router.get("", response_model=list[PromptVersionRead])
def list_prompt_versions(
    caller: AdminDep, agent: AgentDep, session: SessionDep
) -> list[PromptVersionRead]:
    """Every prompt version of the agent, newest first."""
    rows = service.list_prompt_versions(session, agent=agent)
    return [_read(row, agent.live_prompt_version_id) for row in rows]


@router.post("", status_code=201, response_model=PromptVersionRead)
def create_prompt_version(
    body: PromptVersionCreate,
    caller: AdminDep,
    agent: AgentDep,
    audit: AuditDep,
    session: SessionDep,
) -> PromptVersionRead:
    """A manual edit: a new version whose parent is the live one."""
    row = service.create_prompt_version(
        session,
        agent=agent,
        instructions=body.instructions,
        demonstrations=[turn.model_dump() for turn in body.demonstrations],
        source=PromptSource.MANUAL,
        parent_id=agent.live_prompt_version_id,
        note=body.note,
        created_by=caller.key_id,
        activate=body.activate,
    )
    # An activation with it is recorded as an Activation row, with the move itself.
    audit(
        "prompt.create", f"agent:{agent.slug}", {"version": row.version, "activate": body.activate}
    )
    return _read(row, agent.live_prompt_version_id)


@router.get("/diff", response_model=PromptDiffRead)
def diff_prompt_versions(
    caller: AdminDep,
    agent: AgentDep,
    session: SessionDep,
    a: int = Query(ge=1, le=MAX_INT, description="The older version."),
    b: int = Query(ge=1, le=MAX_INT, description="The newer version."),
) -> PromptDiffRead:
    """Compare two versions: both in full, and unified diffs of instructions and turns."""
    diff = service.diff_prompt_versions(session, agent=agent, a=a, b=b)
    return PromptDiffRead(
        a=_read(diff.a, agent.live_prompt_version_id),
        b=_read(diff.b, agent.live_prompt_version_id),
        instructions_diff=diff.instructions,
        demonstrations_diff=diff.demonstrations,
    )


@router.get("/{version}", response_model=PromptVersionRead)
def get_prompt_version(
    version: Version, caller: AdminDep, agent: AgentDep, session: SessionDep
) -> PromptVersionRead:
    row = service.get_prompt_version(session, agent=agent, version=version)
    return _read(row, agent.live_prompt_version_id)


@router.post("/{version}/activate", response_model=PromptVersionRead)
def activate_prompt_version(
    version: Version,
    body: ActivationRequest,
    caller: AdminDep,
    agent: AgentDep,
    actor: ActorDep,
    session: SessionDep,
) -> PromptVersionRead:
    """Make an existing version live (rollback moves the pointer; it copies nothing). The
    move is audited as an Activation row; `reason` defaults to `X-Fastslow-Reason`."""
    row = service.activate_prompt_version(
        session,
        agent=agent,
        version=version,
        reason=body.reason or actor.reason,
        actor_key_id=caller.key_id,
    )
    return _read(row, agent.live_prompt_version_id)
