"""The agent a route's path names, within the caller's tenant, as a dependency."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from backend.agents.models import Agent
from backend.agents.service import get_agent
from backend.http.deps import SessionDep
from backend.tenants.deps import MemberDep


def get_path_agent(slug: str, caller: MemberDep, session: SessionDep) -> Agent:
    """The agent `{slug}` of the caller's tenant (404 if it has none of that name)."""
    return get_agent(session, tenant_id=caller.tenant_id, slug=slug)


AgentDep = Annotated[Agent, Depends(get_path_agent)]
