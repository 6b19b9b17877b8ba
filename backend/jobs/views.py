from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session

from backend.agents.service import get_agent
from backend.audit.deps import ActorDep
from backend.audit.service import Actor, log_event
from backend.http.deps import SessionDep
from backend.jobs import service
from backend.jobs.contract import JobParams, OptimizeParams, TrainParams, Trigger
from backend.jobs.models import Job, JobKind, JobStatus
from backend.jobs.schemas import EvaluationCreate, JobRead
from backend.limits.service import default_limits
from backend.tenants.deps import AdminDep
from backend.tenants.service import TenantCaller

router = APIRouter(prefix="/jobs", tags=["jobs"])
agent_jobs_router = APIRouter(prefix="/agents/{slug}", tags=["jobs"])


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


@router.post("/{job_id}/cancel", response_model=JobRead)
def cancel_job(job_id: uuid.UUID, caller: AdminDep, actor: ActorDep, session: SessionDep) -> Job:
    """Cancel a job: a queued one at once, a running one at its next safe point (it
    activates nothing). 409 if it already ended."""
    job = service.request_cancel(session, tenant_id=caller.tenant_id, job_id=job_id)
    log_event(
        session,
        tenant_id=caller.tenant_id,
        actor=actor,
        action="job.cancel",
        target=f"job:{job_id}",
    )
    return job


@router.post("/{job_id}/retry", status_code=202, response_model=JobRead)
def retry_job(
    job_id: uuid.UUID, caller: AdminDep, actor: ActorDep, session: SessionDep, request: Request
) -> Job:
    """Run a failed or cancelled job again (a new job with the same parameters)."""
    job = service.retry_job(
        session,
        request.app.state.celery,
        tenant_id=caller.tenant_id,
        job_id=job_id,
        created_by=caller.key_id,
        limits=default_limits(request.app.state.settings),
    )
    log_event(
        session,
        tenant_id=caller.tenant_id,
        actor=actor,
        action="job.retry",
        target=f"job:{job_id}",
        details={"new_job_id": str(job.id)},
    )
    return job


@router.get("/{job_id}", response_model=JobRead)
def get_job(job_id: uuid.UUID, caller: AdminDep, session: SessionDep) -> Job:
    """A job with its live progress (`step`/`total`), metrics, result, error and log tail."""
    return service.get_job(session, tenant_id=caller.tenant_id, job_id=job_id)


def _start(
    session: Session,
    request: Request,
    caller: TenantCaller,
    actor: Actor,
    *,
    agent_id: uuid.UUID,
    kind: JobKind,
    params: JobParams | EvaluationCreate,
    exclusive: bool = False,
) -> Job:
    job = service.start_job(
        session,
        request.app.state.celery,
        tenant_id=caller.tenant_id,
        agent_id=agent_id,
        kind=kind,
        params=params,
        created_by=caller.key_id,
        exclusive=exclusive,
        limits=default_limits(request.app.state.settings),
    )
    log_event(
        session,
        tenant_id=caller.tenant_id,
        actor=actor,
        action="job.start",
        target=f"job:{job.id}",
        details={"kind": kind.value, "agent_id": str(agent_id)},
    )
    return job


@agent_jobs_router.post("/evaluate", status_code=202, response_model=JobRead)
def evaluate_agent(
    slug: str,
    body: EvaluationCreate,
    caller: AdminDep,
    actor: ActorDep,
    session: SessionDep,
    request: Request,
) -> Job:
    """Start an evaluation job of the agent's live versions; poll `/api/v1/jobs/{id}`. One
    evaluation per agent at a time (409 otherwise); every job counts against the tenant's
    daily job budget (429 with `Retry-After` over it)."""
    agent = get_agent(session, tenant_id=caller.tenant_id, slug=slug)
    return _start(
        session,
        request,
        caller,
        actor,
        agent_id=agent.id,
        kind=JobKind.EVALUATE,
        params=body,  # checked again against the contract by start_job
        exclusive=True,
    )


@agent_jobs_router.post("/train", status_code=202, response_model=JobRead)
def train_agent(
    slug: str, caller: AdminDep, actor: ActorDep, session: SessionDep, request: Request
) -> Job:
    """Run the slow loop (LoRA RL on the agent's rollouts) now, on a `train` worker. One run
    per agent at a time (409 otherwise). The new adapter goes live only if it passes the gate."""
    agent = get_agent(session, tenant_id=caller.tenant_id, slug=slug)
    return _start(
        session,
        request,
        caller,
        actor,
        agent_id=agent.id,
        kind=JobKind.TRAIN,
        params=TrainParams(trigger=Trigger.ADMIN),
        exclusive=True,
    )


@agent_jobs_router.post("/optimize", status_code=202, response_model=JobRead)
def optimize_agent(
    slug: str, caller: AdminDep, actor: ActorDep, session: SessionDep, request: Request
) -> Job:
    """Run the fast loop for this agent now. One run per agent at a time (409 otherwise).
    On a pinned agent the run keeps its candidates but changes nothing live."""
    agent = get_agent(session, tenant_id=caller.tenant_id, slug=slug)
    return _start(
        session,
        request,
        caller,
        actor,
        agent_id=agent.id,
        kind=JobKind.OPTIMIZE,
        params=OptimizeParams(trigger=Trigger.ADMIN),
        exclusive=True,
    )
