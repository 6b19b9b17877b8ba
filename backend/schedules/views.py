from __future__ import annotations

from fastapi import APIRouter, Response

from backend.agents.service import get_agent
from backend.api.deps import ActorDep, AdminDep, SessionDep
from backend.audit.service import log_event
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
    slug: str, body: ScheduleWrite, caller: AdminDep, actor: ActorDep, session: SessionDep
) -> ScheduleRead:
    """Create or replace the schedule. It applies at once: nothing needs restarting."""
    agent = get_agent(session, tenant_id=caller.tenant_id, slug=slug)
    row = service.put_schedule(session, agent=agent, body=body)
    log_event(
        session,
        tenant_id=caller.tenant_id,
        actor=actor,
        action="schedule.put",
        target=f"agent:{slug}",
        details=body.model_dump(mode="json", exclude_unset=True),
    )
    session.refresh(agent)
    return service.schedule_view(row, agent)


@router.delete("", status_code=204)
def delete_schedule(slug: str, caller: AdminDep, actor: ActorDep, session: SessionDep) -> Response:
    agent = get_agent(session, tenant_id=caller.tenant_id, slug=slug)
    service.delete_schedule(session, agent=agent)
    log_event(
        session,
        tenant_id=caller.tenant_id,
        actor=actor,
        action="schedule.delete",
        target=f"agent:{slug}",
    )
    return Response(status_code=204)
