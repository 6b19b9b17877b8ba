"""A calm console: `fastslow up`'s processes print one line per job, not one per tick."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.backend.helpers import create_agent
from tests.conftest import Stack, TenantKeys, start_worker
from tests.support import VENV_BIN, Process, wait_until


def _job(client: TestClient, tenant: TenantKeys, job_id: str) -> dict[str, Any]:
    job: dict[str, Any] = client.get(f"/api/v1/jobs/{job_id}", headers=tenant.headers()).json()
    return job


def test_the_console_shows_jobs_not_ticks(
    stack: Stack, app_client: TestClient, tenant: TenantKeys
) -> None:
    """Text logs at INFO (what `fastslow up` prints): one line per job start and end, none per
    beat tick or housekeeping task; at DEBUG the ticks are there (so this can fail)."""
    ticking = {
        "FASTSLOW_SCHEDULE_CHECK_INTERVAL_S": "1",
        "FASTSLOW_REAPER_INTERVAL_S": "1",
        "FASTSLOW_FAST_LOOP_CHECK_INTERVAL_S": "1",
    }
    worker = start_worker(stack, "worker-console", **ticking)
    beats = {
        level: Process(
            f"beat-console-{level}",
            [
                str(VENV_BIN / "fastslow"),
                "beat",
                "--schedule-file",
                str(stack.settings.data_dir / f"beat-{level}"),
            ],
            {**stack.env, **ticking, "FASTSLOW_LOG_LEVEL": level},
        )
        for level in ("INFO", "DEBUG")
    }
    try:
        create_agent(app_client, tenant)
        job = app_client.post(
            "/api/v1/agents/support/evaluate",
            json={"prompts": ["Where is my order?"], "max_tokens": 4},
            headers=tenant.headers(),
        ).json()
        wait_until(
            lambda: _job(app_client, tenant, job["id"])["status"] == "succeeded",
            timeout=120,
            what="the evaluation",
        )
        wait_until(
            lambda: beats["DEBUG"].log_tail().count("Sending due task") >= 6,
            timeout=60,
            what="the DEBUG beat's ticks",
        )
        console = worker.log_tail(100_000) + beats["INFO"].log_tail(100_000)
        assert f"job {job['id']} (evaluate) started" in console
        assert f"job {job['id']} (evaluate) succeeded" in console
        for chatty in ("Sending due task", "Received task", "] succeeded in"):
            assert chatty not in console, chatty
        assert "-------------- [queues]" not in console, "no start-up banner"
    finally:
        for beat in beats.values():
            beat.stop()
        worker.stop()
