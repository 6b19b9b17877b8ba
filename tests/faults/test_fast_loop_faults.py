"""A worker killed in the middle of an optimisation: nothing goes live, and the agent's lock
is released once the reaper sees the job's heartbeat stop."""

from __future__ import annotations

import uuid

import httpx
import pytest

from backend.db import Database
from backend.jobs.models import Job, JobStatus
from tests.conftest import Stack, TenantKeys, start_worker
from tests.support import VENV_BIN, Process, wait_until
from tests.worker.fast.support import QUESTIONS, ask_all, create_agent, rate_like_users

pytestmark = pytest.mark.slow

SHORT = {"FASTSLOW_JOB_HEARTBEAT_TIMEOUT_S": "6", "FASTSLOW_REAPER_INTERVAL_S": "1"}


def test_killed_worker_leaves_live_version_and_releases_the_lock(
    stack: Stack, api_server: str, tenant: TenantKeys, database: Database
) -> None:
    # Unpinned: a run that finished would activate its winner; "nothing activated" tests the kill.
    create_agent(api_server, tenant, budget=400)
    rate_like_users(api_server, tenant, ask_all(api_server, tenant, QUESTIONS))
    worker = start_worker(stack, "worker-doomed", queues="fast", **SHORT)
    # Housekeeping runs on another worker, as in any deployment with more than one.
    survivor = start_worker(stack, "worker-survivor", queues="maintenance", **SHORT)
    beat = Process("beat-reaper", [str(VENV_BIN / "fastslow"), "beat"], {**stack.env, **SHORT})
    try:
        h = tenant.headers()
        job_id = httpx.post(f"{api_server}/api/v1/agents/support/optimize", headers=h).json()["id"]

        def making_progress() -> bool:
            job = httpx.get(f"{api_server}/api/v1/jobs/{job_id}", headers=h).json()
            return bool(job["status"] == "running" and job["step"] > 0)

        wait_until(making_progress, timeout=180, interval=0.5, what="the run to make progress")
        worker.kill()  # kill -9, mid-run

        def reaped() -> bool:
            with database.session() as session:
                job = session.get(Job, uuid.UUID(job_id))
                return job is not None and job.status == JobStatus.FAILED

        wait_until(reaped, timeout=60, interval=0.5, what="the reaper")
        with database.session() as session:
            job = session.get(Job, uuid.UUID(job_id))
            assert job is not None
            assert "worker lost" in job.error
            assert job.lock_key is None, "the agent can be optimised again"
        agent = httpx.get(f"{api_server}/api/v1/agents/support", headers=h).json()
        assert agent["live_prompt_version"] == 1
        history = httpx.get(f"{api_server}/api/v1/agents/support/activations", headers=h).json()
        assert len(history) == 1, "nothing was activated"
    finally:
        beat.stop()
        survivor.stop()
        worker.stop()
