"""Jobs through a real broker (Redis in CI, the SQLite transport on the embedded stack) and
real Celery worker and beat processes."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from backend.config import Settings
from backend.db import Database, utcnow
from backend.engines import EngineUnavailable
from backend.errors import Invalid
from backend.jobs.contract import JobOutcome, JobReporter
from backend.jobs.models import Job, JobKind, JobStatus
from backend.jobs.queue import dispatch_job, make_celery
from backend.jobs.service import create_job, fail_job
from tests.backend.helpers import create_agent
from tests.conftest import Stack, TenantKeys, start_worker
from tests.support import VENV_BIN, Process, wait_until
from worker.fast.optimizer import _public_log_line
from worker.jobs import run_job


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


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"max_tokens": 5000}, "max_tokens"),
        ({"prompts": ["  "]}, "prompts"),
        ({"prompts": "Where is my parcel?"}, "prompts"),
        ({"retry_of": str(uuid.uuid4())}, "retry_of"),  # the API sets it, a client cannot
    ],
)
def test_a_bad_evaluate_body_is_refused_naming_the_field(
    body: dict[str, Any], field: str, app_client: TestClient, tenant: TenantKeys
) -> None:
    create_agent(app_client, tenant)
    refused = app_client.post(
        "/api/v1/agents/support/evaluate", json=body, headers=tenant.headers()
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["code"] == "invalid_value"
    assert refused.json()["detail"][0]["loc"] == ["body", field], refused.json()
    listed = app_client.get("/api/v1/jobs", params={"agent": "support"}, headers=tenant.headers())
    assert listed.json() == [], "nothing was started"


def _agent_id(client: TestClient, tenant: TenantKeys) -> uuid.UUID:
    agent = client.get("/api/v1/agents/support", headers=tenant.headers()).json()
    return uuid.UUID(agent["id"])


def test_a_retry_checks_the_stored_parameters_again(
    app_client: TestClient, tenant: TenantKeys, database: Database
) -> None:
    """A failed job whose stored parameters the contract does not accept (written before a
    rule, or by hand) is not started again: 422 naming the field."""
    create_agent(app_client, tenant)
    with database.session() as session:
        job = create_job(
            session,
            tenant_id=tenant.tenant_id,
            agent_id=_agent_id(app_client, tenant),
            kind=JobKind.EVALUATE,
            params={"prompts": ["Hi?"], "limit": 500},
            created_by=None,
        )
        fail_job(session, job_id=job.id, error="engine down")
    refused = app_client.post(f"/api/v1/jobs/{job.id}/retry", headers=tenant.headers())
    assert refused.status_code == 422, refused.text
    assert refused.json()["param"] == "limit"
    assert "limit" in refused.json()["detail"], refused.json()
    listed = app_client.get("/api/v1/jobs", params={"agent": "support"}, headers=tenant.headers())
    assert [j["id"] for j in listed.json()] == [str(job.id)], "no new job"


def test_a_job_with_bad_stored_parameters_fails_on_the_worker_naming_the_field(
    app_client: TestClient,
    tenant: TenantKeys,
    database: Database,
    settings: Settings,
    worker: Process,
) -> None:
    """The worker checks a job's parameters against the contract before it runs it: a row
    that does not match fails with the field named, and no traceback."""
    create_agent(app_client, tenant)
    with database.session() as session:
        job = create_job(
            session,
            tenant_id=tenant.tenant_id,
            agent_id=_agent_id(app_client, tenant),
            kind=JobKind.EVALUATE,
            params={"prompts": ["Hi?"], "max_tokens": 0},
            created_by=None,
        )
    dispatch_job(make_celery(settings), job_id=job.id, kind=job.kind)
    wait_until(
        lambda: _job(app_client, tenant, str(job.id))["status"] == "failed",
        timeout=120,
        what="the job to fail",
    )
    seen = _job(app_client, tenant, str(job.id))
    assert seen["error"] == (
        "invalid evaluate parameters: max_tokens: Input should be greater than or equal to 1"
    ), seen["error"]
    assert seen["started_at"] is not None, "a worker claimed it"
    assert "Traceback" not in seen["error"] + seen["log_tail"]


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


SECRET_DETAIL = "could not open /srv/fastslow/data/x.db as postgres://fastslow:pw@10.0.0.7"


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (RuntimeError(SECRET_DETAIL), "internal error (id {job_id})"),
        (EngineUnavailable(f"engine at http://10.0.0.9:8000: {SECRET_DETAIL}"), "the engine is"),
        (Invalid("no rated rollouts yet"), "no rated rollouts yet"),
    ],
)
def test_a_failed_job_shows_tenants_no_exception_text(
    error: Exception,
    shown: str,
    app_client: TestClient,
    tenant: TenantKeys,
    database: Database,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Run without Celery (`run_job`, as a worker does): an unexpected exception leaves a
    generic reason with the job id in the tenant's `error` and `log_tail`, and its text and
    traceback in the server log only; the tenant's own validation messages stay visible."""
    create_agent(app_client, tenant)
    agent = app_client.get("/api/v1/agents/support", headers=tenant.headers()).json()
    with database.session() as session:
        job = create_job(
            session,
            tenant_id=tenant.tenant_id,
            agent_id=uuid.UUID(agent["id"]),
            kind=JobKind.EVALUATE,
            params={},
            created_by=None,
        )

    async def work(job: Job, reporter: JobReporter) -> JobOutcome:
        reporter.log("started")
        raise error

    with caplog.at_level(logging.ERROR, logger="worker.jobs"):
        assert run_job(database, job.id, work, asyncio.run, heartbeat_s=60)
    seen = _job(app_client, tenant, str(job.id))
    assert seen["status"] == "failed"
    assert shown.format(job_id=job.id) in seen["error"], seen["error"]
    assert shown.format(job_id=job.id) in seen["log_tail"], seen["log_tail"]
    for leak in (SECRET_DETAIL, "10.0.0.9", "Traceback", type(error).__name__):
        assert leak not in seen["error"] + seen["log_tail"], seen
    if not isinstance(error, Invalid):
        # The operator finds the full text under the job id.
        logged = [r for r in caplog.records if str(job.id) in r.getMessage()]
        assert logged and logged[0].exc_info is not None
        assert SECRET_DETAIL in str(logged[0].exc_info[1])


def test_gepa_log_lines_lose_their_exception_text() -> None:
    assert _public_log_line("Traceback (most recent call last):\n  File ...") == ""
    assert (
        _public_log_line(f"Iteration 3: Exception during optimization: {SECRET_DETAIL}")
        == "Iteration 3: Exception during optimization (details in the server log)"
    )
    assert SECRET_DETAIL not in _public_log_line(f"Batched reflection failed ({SECRET_DETAIL})")
    plain = "Iteration 2: New subsample score 0.5 is better than old score 0.2."
    assert _public_log_line(plain) == plain
