from __future__ import annotations

from fastapi import APIRouter, Response

from backend.agents.deps import AgentDep
from backend.audit.deps import AuditDep
from backend.http.deps import SessionDep
from backend.schedules import service
from backend.schedules.schemas import ScheduleRead, ScheduleWrite
from backend.tenants.deps import AdminDep

router = APIRouter(prefix="/agents/{slug}/schedule", tags=["schedules"])


@router.get("", response_model=ScheduleRead)
def get_schedule(caller: AdminDep, agent: AgentDep, session: SessionDep) -> ScheduleRead:
    """The agent's slow-loop schedule, its next five runs, and the fast loop's triggers."""
    return service.schedule_view(service.get_schedule(session, agent=agent), agent)


@router.put("", response_model=ScheduleRead)
def put_schedule(
    body: ScheduleWrite, caller: AdminDep, agent: AgentDep, audit: AuditDep, session: SessionDep
) -> ScheduleRead:
    """Create or replace the schedule. It applies at once: nothing needs restarting."""
    row = service.put_schedule(session, agent=agent, body=body)
    audit("schedule.put", f"agent:{agent.slug}", body.model_dump(mode="json", exclude_unset=True))
    session.refresh(agent)
    return service.schedule_view(row, agent)


@router.delete("", status_code=204)
def delete_schedule(
    caller: AdminDep, agent: AgentDep, audit: AuditDep, session: SessionDep
) -> Response:
    service.delete_schedule(session, agent=agent)
    audit("schedule.delete", f"agent:{agent.slug}")
    return Response(status_code=204)
