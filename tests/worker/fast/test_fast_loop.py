"""The fast loop end to end: real model, real API server, real worker and beat processes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from backend.db import Database
from backend.jobs.models import Job
from tests.conftest import Stack, TenantKeys, start_worker
from tests.support import VENV_BIN, Process, wait_until
from tests.worker.fast.support import QUESTIONS, ask_all, create_agent, rate_like_users

pytestmark = pytest.mark.slow

FAST = {"FASTSLOW_FAST_LOOP_CHECK_INTERVAL_S": "1"}


@pytest.fixture(scope="module")
def workers(stack: Stack) -> Iterator[None]:
    worker = start_worker(stack, "worker-fast-loop", **FAST)
    beat = Process("beat-fast-loop", [str(VENV_BIN / "fastslow"), "beat"], {**stack.env, **FAST})
    yield
    beat.stop()
    worker.stop()


def jobs(api: str, tenant: TenantKeys) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{api}/api/v1/jobs", params={"kind": "optimize"}, headers=tenant.headers()
    )
    result: list[dict[str, Any]] = response.json()
    return result


def wait_for_job(api: str, tenant: TenantKeys, job_id: str, timeout: float = 420) -> dict[str, Any]:
    def done() -> bool:
        status = httpx.get(f"{api}/api/v1/jobs/{job_id}", headers=tenant.headers()).json()
        return bool(status["status"] in ("succeeded", "failed"))

    wait_until(done, timeout=timeout, interval=1, what=f"job {job_id}")
    job: dict[str, Any] = httpx.get(f"{api}/api/v1/jobs/{job_id}", headers=tenant.headers()).json()
    return job


def test_feedback_makes_a_better_prompt_go_live_by_itself(
    api_server: str, tenant: TenantKeys, workers: None
) -> None:
    create_agent(api_server, tenant, min_new_feedback=len(QUESTIONS))
    completions = ask_all(api_server, tenant, QUESTIONS)
    assert all(c["model"] == "support" for c in completions)
    too_long = rate_like_users(api_server, tenant, completions)
    assert too_long >= 6, "the base prompt gives long answers: there is something to learn"

    # Beat notices the N-th rating and starts the fast loop: nobody asks for it.
    wait_until(lambda: bool(jobs(api_server, tenant)), timeout=60, what="a triggered job")
    job = jobs(api_server, tenant)[0]
    assert job["params"] == {"trigger": "feedback", "why": f"{len(QUESTIONS)} new ratings"}
    job = wait_for_job(api_server, tenant, job["id"])
    assert job["status"] == "succeeded", job["error"] + job["log_tail"]
    result, metrics = job["result"], job["metrics"]
    assert result["outcome"] == "promoted", result
    assert metrics["best_score"] > metrics["seed_score"]
    assert 0 < metrics["metric_calls"] <= 36 + 12, "the budget holds (one last evaluation over)"
    assert job["step"] == job["total"]

    h = tenant.headers()
    agent = httpx.get(f"{api_server}/api/v1/agents/support", headers=h).json()
    promoted = result["promoted_version"]
    assert agent["live_prompt_version"] == promoted > 1
    assert agent["population"][0]["version"] == promoted
    version = httpx.get(f"{api_server}/api/v1/agents/support/prompts/{promoted}", headers=h).json()
    assert version["source"] == "optimizer"
    assert version["job_id"] == job["id"]
    assert version["scores"]["validation"] > version["scores"]["live_validation"]

    # Chat is served with the new version from now on.
    served = httpx.post(
        f"{api_server}/v1/chat/completions",
        json={
            "model": "support",
            "messages": [{"role": "user", "content": QUESTIONS[2]}],
            "max_tokens": 48,
            "temperature": 0,
        },
        headers=tenant.headers("member"),
        timeout=120,
    )
    assert served.headers["x-fastslow-prompt-version"] == str(promoted)
    rollout = httpx.get(f"{api_server}/api/v1/rollouts/{served.json()['id']}", headers=h).json()
    assert rollout["prompt_version"] == promoted

    # History: diff against the original, then roll back with a reason.
    diff = httpx.get(
        f"{api_server}/api/v1/agents/support/prompts/diff",
        params={"a": 1, "b": promoted},
        headers=h,
    ).json()
    assert diff["instructions_diff"] or diff["demonstrations_diff"]
    rollback = httpx.post(
        f"{api_server}/api/v1/agents/support/prompts/1/activate",
        json={"reason": "customers liked the old tone"},
        headers=h,
    )
    assert rollback.status_code == 200 and rollback.json()["live"]
    history = httpx.get(f"{api_server}/api/v1/agents/support/activations", headers=h).json()
    assert (history[0]["from_version"], history[0]["to_version"]) == (promoted, 1)
    assert history[0]["reason"] == "customers liked the old tone"
    assert history[1]["job_id"] == job["id"], "the promotion is recorded with its job"
    versions = httpx.get(f"{api_server}/api/v1/agents/support/prompts", headers=h).json()
    assert {v["version"] for v in versions} >= {1, promoted}, "rollback copies nothing"


def test_a_run_that_finds_nothing_better_changes_nothing(
    api_server: str, tenant: TenantKeys, workers: None, database: Database
) -> None:
    create_agent(api_server, tenant, pinned=True)  # pinned: beat leaves it alone
    completions = ask_all(api_server, tenant, QUESTIONS[:6])
    rate_like_users(api_server, tenant, completions)
    h = tenant.headers()
    # Make the live version already satisfy the rule: nothing can beat it.
    httpx.patch(
        f"{api_server}/api/v1/agents/support",
        json={"reward": {"checks": [{"type": "max_words", "limit": 500}], "correction_weight": 0}},
        headers=h,
    ).raise_for_status()
    started = httpx.post(f"{api_server}/api/v1/agents/support/optimize", headers=h)
    assert started.status_code == 202, started.text
    again = httpx.post(f"{api_server}/api/v1/agents/support/optimize", headers=h)
    assert again.status_code == 409, "one run per agent at a time"
    assert started.json()["id"] in again.json()["detail"]

    job = wait_for_job(api_server, tenant, started.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["result"]["outcome"] == "kept"
    agent = httpx.get(f"{api_server}/api/v1/agents/support", headers=h).json()
    assert agent["live_prompt_version"] == 1
    history = httpx.get(f"{api_server}/api/v1/agents/support/activations", headers=h).json()
    assert len(history) == 1, "nothing was activated"
    assert [j["params"]["trigger"] for j in jobs(api_server, tenant)] == ["admin"]
    with database.session() as session:
        finished = session.get(Job, uuid.UUID(job["id"]))
        assert finished is not None and finished.lock_key is None, "the lock is released"


def test_too_little_data_ends_with_a_reason(
    api_server: str, tenant: TenantKeys, workers: None
) -> None:
    create_agent(api_server, tenant, pinned=True, min_examples=10)
    rate_like_users(api_server, tenant, ask_all(api_server, tenant, QUESTIONS[:3]))
    h = tenant.headers()
    job_id = httpx.post(f"{api_server}/api/v1/agents/support/optimize", headers=h).json()["id"]
    job = wait_for_job(api_server, tenant, job_id, timeout=120)
    assert job["status"] == "failed"
    assert "not enough rated questions" in job["error"]
