from __future__ import annotations

from fastapi import APIRouter

from backend.agents import service
from backend.agents.deps import AgentDep
from backend.agents.fast_loop import FastLoopStatus, fast_loop_status
from backend.agents.models import Activation, Agent
from backend.agents.schemas import (
    ActivationRead,
    AgentCreate,
    AgentRead,
    AgentUpdate,
    FastLoopStatusRead,
)
from backend.audit.deps import AuditDep
from backend.http.deps import SessionDep, SettingsDep
from backend.tenants.deps import AdminDep, MemberDep

router = APIRouter(prefix="/agents", tags=["agents"])


@router.post("", status_code=201, response_model=AgentRead)
def create_agent(
    body: AgentCreate,
    caller: AdminDep,
    audit: AuditDep,
    session: SessionDep,
    settings: SettingsDep,
) -> Agent:
    """Create an agent; its `system_prompt` and `demonstrations` become prompt version 1."""
    agent = service.create_agent(
        session,
        tenant_id=caller.tenant_id,
        slug=body.slug,
        system_prompt=body.system_prompt,
        demonstrations=[turn.model_dump() for turn in body.demonstrations],
        base_model=body.base_model,
        served_base_model=settings.base_model_name,
        reward=body.reward,
        max_tokens_cap=body.max_tokens_cap or settings.default_max_tokens,
        max_prompt_tokens=body.max_prompt_tokens,
        description=body.description,
        fast_loop=body.fast_loop,
        slow_loop=body.slow_loop,
        created_by=caller.key_id,
    )
    audit("agent.create", f"agent:{agent.slug}")
    return agent


@router.get("", response_model=list[AgentRead])
def list_agents(caller: MemberDep, session: SessionDep) -> list[Agent]:
    return service.list_agents(session, tenant_id=caller.tenant_id)


@router.get("/{slug}", response_model=AgentRead)
def get_agent(agent: AgentDep) -> Agent:
    return agent


@router.patch("/{slug}", response_model=AgentRead)
def update_agent(
    body: AgentUpdate, caller: AdminDep, agent: AgentDep, audit: AuditDep, session: SessionDep
) -> Agent:
    updated = service.update_agent(
        session,
        agent=agent,
        description=body.description,
        reward=body.reward,
        max_tokens_cap=body.max_tokens_cap,
        max_prompt_tokens=body.max_prompt_tokens,
        fast_loop=body.fast_loop,
        slow_loop=body.slow_loop,
    )
    audit(
        "agent.update",
        f"agent:{agent.slug}",
        {"fields": sorted(body.model_dump(exclude_unset=True))},
    )
    return updated


@router.get("/{slug}/fast-loop", response_model=FastLoopStatusRead)
def get_fast_loop_status(caller: AdminDep, agent: AgentDep, session: SessionDep) -> FastLoopStatus:
    """When the next optimisation will run, and which one is running now."""
    return fast_loop_status(session, agent=agent)


@router.get("/{slug}/activations", response_model=list[ActivationRead])
def list_activations(caller: AdminDep, agent: AgentDep, session: SessionDep) -> list[Activation]:
    """The agent's history of live-version changes (prompt and adapter), newest first."""
    return service.list_activations(session, agent=agent)
