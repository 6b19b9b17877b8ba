"""What a slow-loop run leaves: the candidate adapter, staged and checked like an upload, then
registered as a new adapter version (whatever the gate said) and activated if the gate passed
it."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

from sqlalchemy import select

from backend.adapters.activation import activate_adapter
from backend.adapters.models import AdapterSource, AdapterVersion
from backend.adapters.service import register_adapter
from backend.adapters.storage import AdapterStore, adapter_validator
from backend.agents.models import Agent
from backend.config import Settings
from backend.db import Database
from backend.engines import Engine
from backend.errors import DomainError, Invalid
from backend.jobs.contract import JobOutcome, JobReporter
from backend.jobs.models import Job
from worker.promotion import Decision
from worker.slow.assess import Assessment
from worker.slow.plan import Plan
from worker.slow.policy import Policy


async def stage_candidate(policy: Policy, store: AdapterStore, app_settings: Settings) -> Path:
    """The trained adapter in the store's staging area, meeting the same rules as uploads
    before any engine loads it."""
    staging = store.staging_dir()
    await asyncio.to_thread(policy.save_adapter, staging)
    try:
        await asyncio.to_thread(adapter_validator(app_settings).sanitize, staging)
    except Invalid:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


async def register_and_activate(
    database: Database,
    engine: Engine,
    store: AdapterStore,
    plan: Plan,
    job: Job,
    reporter: JobReporter,
    app_settings: Settings,
    *,
    staging: Path,
    assessment: Assessment,
    decision: Decision,
    curves: dict[str, list[float | None]],
) -> JobOutcome:
    metrics = assessment.as_dict()

    def register() -> AdapterVersion:
        with database.session() as session:
            agent = session.scalars(select(Agent).where(Agent.id == plan.agent_id)).unique().one()
            return register_adapter(
                session,
                store,
                agent=agent,
                staging=staging,
                source=AdapterSource.TRAINING,
                validator=adapter_validator(app_settings),
                note=f"slow loop ({plan.settings.algorithm}, {plan.settings.contexts} contexts)",
                metrics={**metrics, "curves": curves, "gate": decision.reason},
                parent_id=plan.live_adapter.id if plan.live_adapter else None,
                job_id=job.id,
            )

    row = await asyncio.to_thread(register)
    outcome: dict[str, Any] = {
        "adapter_version": row.version,
        "assessment": metrics,
        "reason": decision.reason,
        "outcome": "kept",
    }
    if decision.promote:
        try:
            await activate_adapter(
                database,
                engine,
                store,
                tenant_id=plan.tenant_id,
                slug=plan.slug,
                version=row.version,
                reason=f"slow loop: {decision.reason}",
                actor_key_id=None,
                unload_grace_s=None,
            )
            outcome["outcome"] = "promoted"
        except DomainError as exc:
            outcome["reason"] = f"passed the gate but could not be activated: {exc.message}"
    reporter.log(f"adapter v{row.version}: {outcome['outcome']} ({outcome['reason']})")
    return JobOutcome(result=outcome, metrics={**metrics, "curves": curves})
