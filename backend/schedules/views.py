from __future__ import annotations

from fastapi import APIRouter, Response

from backend.agents.service import get_agent
from backend.api.deps import AdminDep, SessionDep
from backend.schedules import service
from backend.schedules.schemas import ScheduleRead, ScheduleWrite

router = APIRouter(prefix="/api/v1/agents/{slug}/schedule", tags=["schedules"])


@router.get("", response_model=ScheduleRead)
def get_schedule(slug: str, caller: AdminDep, session: SessionDep) -> ScheduleRead:
    """The agent's slow-loop schedule, its next five runs, and the fast loop's triggers."""
    agent = get_agent(session, tenant_id=caller.tenant_id, slug=slug)
    return service.schedule_view(service.get_schedule(session, agent=agent), agent)


@router.put("", response_model=ScheduleRead)
def put_schedule(
    slug: str, body: ScheduleWrite, caller: AdminDep, session: SessionDep
) -> ScheduleRead:
    """Create or replace the schedule. It applies at once: nothing needs restarting."""
    agent = get_agent(session, tenant_id=caller.tenant_id, slug=slug)
    row = service.put_schedule(session, agent=agent, body=body)
    session.refresh(agent)
    return service.schedule_view(row, agent)


@router.delete("", status_code=204)
def delete_schedule(slug: str, caller: AdminDep, session: SessionDep) -> Response:
    agent = get_agent(session, tenant_id=caller.tenant_id, slug=slug)
    service.delete_schedule(session, agent=agent)
    return Response(status_code=204)
