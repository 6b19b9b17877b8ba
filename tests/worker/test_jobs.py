"""Jobs through a real broker (Redis in CI, the SQLite transport on the embedded stack) and
real Celery worker and beat processes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from backend.db import Database, utcnow
from backend.jobs.models import Job, JobKind, JobStatus
from tests.api.helpers import create_agent
from tests.conftest import Stack, TenantKeys, start_worker
from tests.support import VENV_BIN, Process, wait_until


@pytest.fixture(scope="module")
def worker(stack: Stack) -> Iterator[Process]:
    process = start_worker(stack, "worker-jobs")
    yield process
    process.stop()


def _job(client: TestClient, tenant: TenantKeys, job_id: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/jobs/{job_id}", headers=tenant.headers())
    assert response.status_code == 200
    data: dict[str, Any] = response.json()
    return data


def test_evaluation_job_runs_on_a_worker_and_reports_progress(
    app_client: TestClient, tenant: TenantKeys, worker: Process
) -> None:
    create_agent(
        app_client,
        tenant,
        demonstrations=[
            {"role": "user", "content": "Where is my parcel?"},
            {"role": "assistant", "content": "Certainly: it ships tomorrow."},
        ],
        reward={
            "checks": [
                {"type": "starts_with", "text": "Certainly:"},
                {"type": "max_words", "limit": 200},
            ]
        },
    )
    prompts = ["Where is my order #10001?", "Can I return my shoes?", "Do you ship to Norway?"]
    started = app_client.post(
        "/api/v1/agents/support/evaluate",
        json={"prompts": prompts, "max_tokens": 12},
        headers=tenant.headers(),
    )
    assert started.status_code == 202, started.text
    job_id = started.json()["id"]
    assert started.json()["status"] == "queued"

    seen_steps: set[int] = set()

    def finished() -> bool:
        job = _job(app_client, tenant, job_id)
        seen_steps.add(job["step"])
        return bool(job["status"] in ("succeeded", "failed"))

    wait_until(finished, timeout=180, interval=0.2, what="the evaluation job")
    job = _job(app_client, tenant, job_id)
    assert job["status"] == "succeeded", (job["error"], worker.log_tail())
    assert (job["step"], job["total"]) == (3, 3)
    assert len(seen_steps) >= 2, "progress was visible while the job ran"
    items = job["result"]["items"]
    assert [i["question"] for i in items] == prompts
    assert all(i["answer"] for i in items)
    assert job["metrics"]["answered"] == 3
    assert job["metrics"]["pass_rate.max_words"] == 1.0
    expected = sum(1 for i in items if i["answer"].lstrip().lower().startswith("certainly:")) / 3
    assert job["metrics"]["pass_rate.starts_with"] == pytest.approx(expected)
    assert job["started_at"] and job["finished_at"]
    assert job["result"]["prompt_version"] == 1

    listed = app_client.get(
        "/api/v1/jobs", params={"agent": "support", "kind": "evaluate"}, headers=tenant.headers()
    )
    assert [j["id"] for j in listed.json()] == [job_id]


def test_a_job_with_nothing_to_do_fails_with_a_reason(
    app_client: TestClient, tenant: TenantKeys, worker: Process
) -> None:
    create_agent(app_client, tenant)
    job_id = app_client.post(
        "/api/v1/agents/support/evaluate", json={}, headers=tenant.headers()
    ).json()["id"]
    wait_until(
        lambda: _job(app_client, tenant, job_id)["status"] == "failed",
        timeout=120,
        what="the job to fail",
    )
    assert "no rollouts yet" in _job(app_client, tenant, job_id)["error"]


def test_beat_reaps_jobs_whose_worker_died(
    stack: Stack, database: Database, tenant: TenantKeys
) -> None:
    """A job left running by a dead worker is marked failed by the periodic reaper."""
    with database.session() as session:
        job = Job(
            tenant_id=tenant.tenant_id,
            agent_id=None,
            kind=JobKind.EVALUATE,
            status=JobStatus.RUNNING,
            started_at=utcnow() - timedelta(hours=1),
            heartbeat_at=utcnow() - timedelta(hours=1),
        )
        session.add(job)
        session.commit()
        job_id = job.id
    fast = {"FASTSLOW_REAPER_INTERVAL_S": "1", "FASTSLOW_JOB_HEARTBEAT_TIMEOUT_S": "30"}
    beat = Process(
        f"beat-{uuid.uuid4().hex[:6]}",
        [str(VENV_BIN / "fastslow"), "beat"],
        {**stack.env, **fast},
    )
    reaper = start_worker(stack, "worker-reaper", **fast)
    try:

        def reaped() -> bool:
            with database.session() as session:
                row = session.get(Job, job_id)
                return row is not None and row.status == JobStatus.FAILED

        wait_until(reaped, timeout=90, interval=0.5, what="the reaper")
        with database.session() as session:
            row = session.get(Job, job_id)
            assert row is not None and "worker lost" in row.error
    finally:
        beat.stop()
        reaper.stop()
