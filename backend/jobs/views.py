from __future__ import annotations

import uuid

from fastapi import APIRouter, Request

from backend.agents.service import get_agent
from backend.api.deps import AdminDep, SessionDep
from backend.errors import Invalid
from backend.jobs import service
from backend.jobs.models import Job, JobKind, JobStatus
from backend.jobs.queue import dispatch_job
from backend.jobs.schemas import EvaluationCreate, JobRead

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])
agent_jobs_router = APIRouter(prefix="/api/v1/agents/{slug}", tags=["jobs"])


@router.get("", response_model=list[JobRead])
def list_jobs(
    caller: AdminDep,
    session: SessionDep,
    agent: str | None = None,
    kind: str | None = None,
    status: JobStatus | None = None,
) -> list[Job]:
    agent_id = get_agent(session, tenant_id=caller.tenant_id, slug=agent).id if agent else None
    return service.list_jobs(
        session, tenant_id=caller.tenant_id, agent_id=agent_id, kind=kind, status=status
    )


@router.get("/{job_id}", response_model=JobRead)
def get_job(job_id: uuid.UUID, caller: AdminDep, session: SessionDep) -> Job:
    """A job with its live progress (`step`/`total`), metrics, result, error and log tail."""
    return service.get_job(session, tenant_id=caller.tenant_id, job_id=job_id)


@agent_jobs_router.post("/evaluate", status_code=202, response_model=JobRead)
def evaluate_agent(
    slug: str, body: EvaluationCreate, caller: AdminDep, session: SessionDep, request: Request
) -> Job:
    """Start an evaluation job of the agent's live versions; poll `/api/v1/jobs/{id}`."""
    agent = get_agent(session, tenant_id=caller.tenant_id, slug=slug)
    if body.prompts is not None and not [p for p in body.prompts if p.strip()]:
        raise Invalid("prompts must hold at least one non-empty question", param="prompts")
    job = service.create_job(
        session,
        tenant_id=caller.tenant_id,
        agent_id=agent.id,
        kind=JobKind.EVALUATE,
        params=body.model_dump(),
        created_by=caller.key_id,
    )
    try:
        dispatch_job(request.app.state.celery, job_id=job.id, kind=job.kind)
    except Exception as exc:
        service.fail_job(session, job_id=job.id, error=str(exc))
        raise
    session.refresh(job)
    return job
