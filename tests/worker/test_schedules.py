"""Schedules: validation, beat firing from the database, edits without restarts, two beats,
catch-up after downtime; and job retry."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from backend.db import Database, utcnow
from backend.jobs.models import Job, JobKind, JobStatus
from backend.jobs.queue import make_celery
from backend.schedules.models import Schedule
from backend.schedules.service import claim_due
from tests.backend.helpers import create_agent
from tests.conftest import Stack, TenantKeys, start_worker
from tests.support import VENV_BIN, Process, wait_until
from worker.schedules import fire_due

FAST = {"FASTSLOW_SCHEDULE_CHECK_INTERVAL_S": "1"}
# Runs fired by these tests end at once (too few questions): only the firing is under test.
QUICK_FAIL = {"min_questions": 10_000}


def put(client: TestClient, tenant: TenantKeys, **body: Any) -> Any:
    return client.put("/api/v1/agents/support/schedule", json=body, headers=tenant.headers())


def test_schedule_validation_and_preview(app_client: TestClient, tenant: TenantKeys) -> None:
    create_agent(app_client, tenant)
    h = tenant.headers()
    assert app_client.get("/api/v1/agents/support/schedule", headers=h).status_code == 404
    cases: dict[str, tuple[dict[str, Any], str]] = {
        "bad cron": ({"cron": "61 * * * *"}, "invalid cron expression"),
        "six fields": ({"cron": "0 0 * * * *"}, "five fields"),
        "unknown zone": ({"cron": "0 2 * * *", "timezone": "Mars/Olympus"}, "unknown time zone"),
        "both": ({"cron": "0 2 * * *", "interval_s": 60}, "exactly one"),
        "neither": ({}, "exactly one"),
        "zero interval": ({"interval_s": 0}, "greater than or equal to 1"),
    }
    for name, (body, message) in cases.items():
        response = put(app_client, tenant, **body)
        assert response.status_code == 422, name
        assert message in str(response.json()["detail"]), (name, response.json())
    assert app_client.get("/api/v1/agents/support/schedule", headers=h).status_code == 404

    saved = put(
        app_client,
        tenant,
        cron="0 2 * * *",
        timezone="Europe/Oslo",
        fast_loop={"min_new_feedback": 3},
    )
    assert saved.status_code == 200, saved.text
    data = saved.json()
    assert data["description"] == "At 02:00 AM (Europe/Oslo)"
    runs = [r for r in data["next_runs"]]
    assert len(runs) == 5 and runs == sorted(runs)
    assert all(r.endswith(("T01:00:00Z", "T00:00:00Z")) for r in runs), "02:00 Oslo in UTC"
    assert data["fast_loop"]["min_new_feedback"] == 3
    agent = app_client.get("/api/v1/agents/support", headers=h).json()
    assert agent["fast_loop"]["min_new_feedback"] == 3, "one place for the fast loop's triggers"
    assert app_client.delete("/api/v1/agents/support/schedule", headers=h).status_code == 204


def test_claiming_is_exclusive_under_concurrency(
    database: Database, app_client: TestClient, tenant: TenantKeys
) -> None:
    create_agent(app_client, tenant)
    assert put(app_client, tenant, interval_s=3600).status_code == 200
    with database.session() as session:
        session.execute(
            update(Schedule)
            .where(Schedule.tenant_id == tenant.tenant_id)
            .values(next_run_at=utcnow() - timedelta(hours=5))
        )
        session.commit()
    wins: list[int] = []
    barrier = threading.Barrier(8)

    def claim() -> None:
        barrier.wait()
        with database.session() as session:
            mine = [c for c in claim_due(session) if c.schedule.tenant_id == tenant.tenant_id]
            wins.append(len(mine))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(wins) == 1, f"one occurrence, claimed {sum(wins)} times"
    with database.session() as session:
        row = session.scalars(select(Schedule).where(Schedule.tenant_id == tenant.tenant_id)).one()
        # Five missed hours collapse into one run; the next one is an interval from now.
        assert row.next_run_at > utcnow() + timedelta(minutes=59)


def test_missed_runs_catch_up_once(
    stack: Stack, database: Database, app_client: TestClient, tenant: TenantKeys
) -> None:
    create_agent(app_client, tenant, slow_loop=QUICK_FAIL)
    assert put(app_client, tenant, interval_s=60, skip_if_unchanged=False).status_code == 200
    with database.session() as session:
        session.execute(
            update(Schedule)
            .where(Schedule.tenant_id == tenant.tenant_id)
            .values(next_run_at=utcnow() - timedelta(hours=2))  # beat was down for 2 hours
        )
        session.commit()
    celery = make_celery(stack.settings)
    started = fire_due(database, celery) + fire_due(database, celery)
    with database.session() as session:
        jobs = session.scalars(select(Job).where(Job.tenant_id == tenant.tenant_id)).all()
    assert len(jobs) == 1 and [j.id for j in jobs] == [
        s for s in started if s in {j.id for j in jobs}
    ], "120 missed occurrences start one run"
    assert jobs[0].kind == JobKind.TRAIN and jobs[0].params["trigger"] == "schedule"


def test_an_occurrence_the_broker_refused_is_retried_at_the_next_tick(
    stack: Stack, database: Database, app_client: TestClient, tenant: TenantKeys
) -> None:
    create_agent(app_client, tenant, slow_loop=QUICK_FAIL)
    assert put(app_client, tenant, cron="0 3 * * *", skip_if_unchanged=False).status_code == 200
    due_at = utcnow() - timedelta(minutes=1)
    with database.session() as session:
        session.execute(
            update(Schedule)
            .where(Schedule.tenant_id == tenant.tenant_id)
            .values(next_run_at=due_at)
        )
        session.commit()

    def schedule() -> Schedule:
        with database.session() as session:
            return session.scalars(
                select(Schedule).where(Schedule.tenant_id == tenant.tenant_id)
            ).one()

    # Nothing listens on port 1: every send is refused, as by a broker that is down or full.
    refusing = make_celery(
        stack.settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    )
    assert fire_due(database, refusing) == []
    refused = schedule()
    assert refused.last_outcome.startswith("failed to start"), refused.last_outcome
    # The occurrence is given back, not lost until tomorrow's 03:00.
    assert abs((refused.next_run_at - due_at).total_seconds()) < 1
    assert [j["status"] for j in train_jobs(app_client, tenant)] == ["failed"]

    started = fire_due(database, make_celery(stack.settings))
    assert len(started) == 1
    fired = schedule()
    assert fired.last_job_id == started[0] and fired.last_outcome.startswith("started")
    assert fired.next_run_at > utcnow() + timedelta(minutes=1), "on to the next occurrence"


@pytest.fixture(scope="module")
def worker(stack: Stack) -> Iterator[Process]:
    process = start_worker(stack, "worker-schedules", **FAST)
    yield process
    process.stop()


def train_jobs(client: TestClient, tenant: TenantKeys) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = client.get(
        "/api/v1/jobs", params={"kind": "train"}, headers=tenant.headers()
    ).json()
    return jobs


def test_beat_fires_from_the_database_and_edits_apply_without_restart(
    stack: Stack, app_client: TestClient, tenant: TenantKeys, worker: Process
) -> None:
    create_agent(app_client, tenant, slow_loop=QUICK_FAIL)
    assert put(app_client, tenant, interval_s=3600, skip_if_unchanged=False).status_code == 200
    beat = Process(
        f"beat-sched-{uuid.uuid4().hex[:4]}",
        [str(VENV_BIN / "fastslow"), "beat"],
        {**stack.env, **FAST},
    )
    try:
        time.sleep(4)
        assert train_jobs(app_client, tenant) == [], "not due for an hour"
        # Edit while beat runs: due every 2 seconds from now on.
        assert put(app_client, tenant, interval_s=2, skip_if_unchanged=False).status_code == 200
        wait_until(
            lambda: len(train_jobs(app_client, tenant)) >= 2, timeout=60, what="two scheduled runs"
        )
        jobs = train_jobs(app_client, tenant)
        assert all(j["params"]["trigger"] == "schedule" for j in jobs)
        schedule = app_client.get(
            "/api/v1/agents/support/schedule", headers=tenant.headers()
        ).json()
        assert schedule["last_fired_at"] and schedule["last_outcome"]
        # Disable: no more runs.
        assert put(app_client, tenant, enabled=False, interval_s=2).status_code == 200
        time.sleep(2)
        count = len(train_jobs(app_client, tenant))
        time.sleep(5)
        assert len(train_jobs(app_client, tenant)) == count
    finally:
        beat.stop()


def test_two_beats_fire_each_occurrence_once(
    stack: Stack, app_client: TestClient, tenant: TenantKeys, worker: Process
) -> None:
    create_agent(app_client, tenant, slow_loop=QUICK_FAIL)
    # A calm console leaves beat's ticks out; this test counts them to know both beats live.
    env = {**stack.env, **FAST, "FASTSLOW_LOG_CALM": "false"}
    beats = [
        Process(
            f"beat-twin-{n}",
            [
                str(VENV_BIN / "fastslow"),
                "beat",
                "--schedule-file",
                str(stack.settings.data_dir / f"beat-{n}"),
            ],
            env,
        )
        for n in (1, 2)
    ]

    def ticks(beat: Process) -> int:
        return beat.log_path.read_text(errors="replace").count("Sending due task schedules ")

    try:
        wait_until(lambda: all(ticks(b) >= 1 for b in beats), timeout=60, what="both beats")
        start = time.monotonic()
        assert put(app_client, tenant, interval_s=3, skip_if_unchanged=False).status_code == 200
        wait_until(lambda: len(train_jobs(app_client, tenant)) >= 3, timeout=60, what="three runs")
        elapsed = time.monotonic() - start
        jobs = train_jobs(app_client, tenant)
        # One run per 3 s occurrence (the first is due at once); both beats ticked throughout,
        # so each occurrence was offered twice and claimed once.
        assert len(jobs) <= int(elapsed // 3) + 1, (len(jobs), elapsed)
        assert all(b.alive for b in beats)
        assert all(ticks(b) >= elapsed - 2 for b in beats), [ticks(b) for b in beats]
    finally:
        for beat in beats:
            beat.stop()


def test_retry_a_failed_job(
    app_client: TestClient, tenant: TenantKeys, worker: Process, database: Database
) -> None:
    create_agent(app_client, tenant, slow_loop=QUICK_FAIL)
    h = tenant.headers()
    job = app_client.post("/api/v1/agents/support/train", headers=h).json()
    wait_until(
        lambda: app_client.get(f"/api/v1/jobs/{job['id']}", headers=h).json()["status"] == "failed",
        timeout=120,
        what="the run to fail",
    )
    again = app_client.post(f"/api/v1/jobs/{job['id']}/retry", headers=h)
    assert again.status_code == 202, again.text
    assert again.json()["params"]["retry_of"] == job["id"]
    assert again.json()["id"] != job["id"]
    # The retry fails as quickly as the original (same parameters): wait on its state, then hold
    # it queued and running in the database, so the refusal is checked in each state, not raced.
    retried = uuid.UUID(again.json()["id"])
    wait_until(
        lambda: app_client.get(f"/api/v1/jobs/{retried}", headers=h).json()["status"] == "failed",
        timeout=120,
        what="the retry to fail",
    )
    for status in (JobStatus.QUEUED, JobStatus.RUNNING):
        with database.session() as session:
            session.execute(update(Job).where(Job.id == retried).values(status=status))
            session.commit()
        refused = app_client.post(f"/api/v1/jobs/{retried}/retry", headers=h)
        assert refused.status_code == httpx.codes.CONFLICT, (status, refused.text)
        assert f"this one is {status}" in refused.json()["detail"]
    with database.session() as session:
        session.execute(update(Job).where(Job.id == retried).values(status=JobStatus.FAILED))
        session.commit()
