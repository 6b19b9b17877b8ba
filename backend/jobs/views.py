from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

from celery import Celery
from fastapi import APIRouter, Depends
from sqlalchemy.orm import Session

from backend.agents.deps import AgentDep
from backend.agents.models import Agent
from backend.agents.service import get_agent
from backend.audit.deps import AuditDep, AuditWriter
from backend.config import Settings
from backend.http.deps import CeleryDep, SessionDep, SettingsDep
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
def cancel_job(job_id: uuid.UUID, caller: AdminDep, audit: AuditDep, session: SessionDep) -> Job:
    """Cancel a job: a queued one at once, a running one at its next safe point (it
    activates nothing). 409 if it already ended."""
    job = service.request_cancel(session, tenant_id=caller.tenant_id, job_id=job_id)
    audit("job.cancel", f"job:{job_id}")
    return job


@router.post("/{job_id}/retry", status_code=202, response_model=JobRead)
def retry_job(
    job_id: uuid.UUID,
    caller: AdminDep,
    audit: AuditDep,
    session: SessionDep,
    celery: CeleryDep,
    settings: SettingsDep,
) -> Job:
    """Run a failed or cancelled job again (a new job with the same parameters)."""
    job = service.retry_job(
        session,
        celery,
        tenant_id=caller.tenant_id,
        job_id=job_id,
        created_by=caller.key_id,
        limits=default_limits(settings),
    )
    audit("job.retry", f"job:{job_id}", {"new_job_id": str(job.id)})
    return job


@router.get("/{job_id}", response_model=JobRead)
def get_job(job_id: uuid.UUID, caller: AdminDep, session: SessionDep) -> Job:
    """A job with its live progress (`step`/`total`), metrics, result, error and log tail."""
    return service.get_job(session, tenant_id=caller.tenant_id, job_id=job_id)


@dataclass(frozen=True)
class JobStarter:
    """Starts a job of the agent a route's path names, for its caller, and audits it."""

    session: Session
    celery: Celery
    settings: Settings
    caller: TenantCaller
    agent: Agent
    audit: AuditWriter

    def __call__(self, kind: JobKind, params: JobParams | EvaluationCreate) -> Job:
        job = service.start_job(
            self.session,
            self.celery,
            tenant_id=self.caller.tenant_id,
            agent_id=self.agent.id,
            kind=kind,
            params=params,  # checked against the contract by start_job
            created_by=self.caller.key_id,
            exclusive=True,  # one job of each kind per agent at a time
            limits=default_limits(self.settings),
        )
        self.audit(
            "job.start", f"job:{job.id}", {"kind": kind.value, "agent_id": str(self.agent.id)}
        )
        return job


def get_job_starter(
    caller: AdminDep,
    agent: AgentDep,
    audit: AuditDep,
    session: SessionDep,
    celery: CeleryDep,
    settings: SettingsDep,
) -> JobStarter:
    return JobStarter(session, celery, settings, caller, agent, audit)


StarterDep = Annotated[JobStarter, Depends(get_job_starter)]


@agent_jobs_router.post("/evaluate", status_code=202, response_model=JobRead)
def evaluate_agent(body: EvaluationCreate, start: StarterDep) -> Job:
    """Start an evaluation job of the agent's live versions; poll `/api/v1/jobs/{id}`. One
    evaluation per agent at a time (409 otherwise); every job counts against the tenant's
    daily job budget (429 with `Retry-After` over it)."""
    return start(JobKind.EVALUATE, body)


@agent_jobs_router.post("/train", status_code=202, response_model=JobRead)
def train_agent(start: StarterDep) -> Job:
    """Run the slow loop (LoRA RL on the agent's rollouts) now, on a `train` worker. One run
    per agent at a time (409 otherwise). The new adapter goes live only if it passes the gate."""
    return start(JobKind.TRAIN, TrainParams(trigger=Trigger.ADMIN))


@agent_jobs_router.post("/optimize", status_code=202, response_model=JobRead)
def optimize_agent(start: StarterDep) -> Job:
    """Run the fast loop for this agent now. One run per agent at a time (409 otherwise).
    On a pinned agent the run keeps its candidates but changes nothing live."""
    return start(JobKind.OPTIMIZE, OptimizeParams(trigger=Trigger.ADMIN))
