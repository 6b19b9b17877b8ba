"""A worker killed in the middle of training: the run is queued again and resumes from its
last checkpoint on another worker; nothing goes live before the run ends."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Stack, TenantKeys, start_worker
from tests.support import VENV_BIN, Process, wait_until
from tests.worker.slow.test_slow_loop import finished, job_of, make_agent, start

pytestmark = pytest.mark.slow

SHORT = {"FASTSLOW_JOB_HEARTBEAT_TIMEOUT_S": "8", "FASTSLOW_REAPER_INTERVAL_S": "1"}


def test_killed_training_resumes_from_its_checkpoint(
    stack: Stack, api_server: str, tenant: TenantKeys
) -> None:
    make_agent(api_server, tenant, steps=5, checkpoint_every=2, kl_budget=1e-9)
    doomed = start_worker(stack, "worker-train-doomed", queues="train", **SHORT)
    housekeeping = start_worker(stack, "worker-housekeeping", queues="maintenance", **SHORT)
    beat = Process(
        "beat-train-reaper", [str(VENV_BIN / "fastslow"), "beat"], {**stack.env, **SHORT}
    )
    rescuer: Process | None = None
    try:
        job = start(api_server, tenant)
        wait_until(
            lambda: job_of(api_server, tenant, job["id"])["step"] >= 3,
            timeout=600,
            interval=0.5,
            what="a checkpoint (step 2) and progress past it",
        )
        doomed.kill()
        wait_until(
            lambda: job_of(api_server, tenant, job["id"])["status"] == "queued",
            timeout=120,
            interval=0.5,
            what="the reaper to queue the run again",
        )
        h = tenant.headers()
        agent = httpx.get(f"{api_server}/api/v1/agents/support", headers=h).json()
        assert agent["live_adapter_version"] is None, "nothing live from a half-done run"

        rescuer = start_worker(stack, "worker-train-rescuer", queues="train", **SHORT)
        job = finished(api_server, tenant, job["id"])
        assert job["status"] == "succeeded", job["error"] + job["log_tail"]
        assert job["attempts"] == 2
        assert "resuming at step 2" in job["log_tail"]
        assert len(job["metrics"]["curves"]["reward"]) == 5, "curves survive the restart"
    finally:
        for process in (rescuer, beat, housekeeping, doomed):
            if process is not None:
                process.stop()
