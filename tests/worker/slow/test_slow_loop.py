"""The slow loop end to end: real model, real API server, real worker processes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Stack, TenantKeys, start_worker
from tests.support import Process, wait_until
from tests.worker.fast.support import QUESTIONS, ask_all, rate_like_users

pytestmark = pytest.mark.slow

# Sized for CI on 2 cores. The live context carries two demonstrations that begin with "Sure:",
# so rollouts sampled with it often do: groups have reward variance and RL gets a signal (the
# FST argument in miniature). Measured: rollout reward 0.06 -> 1.0 in two steps; greedy
# validation reward with the live context 0.0 -> 1.0, and 0.33 with no context at all.
TRAINING = {
    "steps": 3,
    "questions_per_step": 4,
    "group_size": 4,
    "max_tokens": 32,
    "learning_rate": 1e-3,
    "contexts": "live",
    "eval_questions": 3,
    "min_questions": 4,
    "checkpoint_every": 2,
    # Every gate condition on (none set out of reach), each asserted where the run is
    # promoted: at this learning rate the KL to the base is about 0.5 (0.53 in a CI run), so
    # the budget is 1.0 (default 0.5); base-skill retention at its default.
    "margin": 0.0,
    "kl_budget": 1.0,
    "retention_tolerance": 0.1,
    "seed": 7,
}


@pytest.fixture(scope="module")
def worker(stack: Stack) -> Iterator[Process]:
    process = start_worker(stack, "worker-slow-loop")
    yield process
    process.stop()


def make_agent(api: str, tenant: TenantKeys, **slow_loop: Any) -> list[dict[str, Any]]:
    response = httpx.post(
        f"{api}/api/v1/agents",
        json={
            "slug": "support",
            "system_prompt": "You are a helpful customer support agent.",
            "demonstrations": [
                {"role": "user", "content": "Where is my parcel?"},
                {"role": "assistant", "content": "Sure: it ships tomorrow."},
                {"role": "user", "content": "Can I get a refund?"},
                {"role": "assistant", "content": "Sure: refunds take 5 days."},
            ],
            "reward": {"checks": [{"type": "starts_with", "text": "Sure"}], "correction_weight": 0},
            "max_tokens_cap": 64,
            "fast_loop": {"pinned": True},
            "slow_loop": {**TRAINING, **slow_loop},
        },
        headers=tenant.headers(),
    )
    assert response.status_code == 201, response.text
    return ask_all(api, tenant, QUESTIONS)


def start(api: str, tenant: TenantKeys) -> dict[str, Any]:
    response = httpx.post(f"{api}/api/v1/agents/support/train", headers=tenant.headers())
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


def job_of(api: str, tenant: TenantKeys, job_id: str) -> dict[str, Any]:
    job: dict[str, Any] = httpx.get(f"{api}/api/v1/jobs/{job_id}", headers=tenant.headers()).json()
    return job


def finished(api: str, tenant: TenantKeys, job_id: str, timeout: float = 600) -> dict[str, Any]:
    wait_until(
        lambda: job_of(api, tenant, job_id)["status"] in ("succeeded", "failed", "cancelled"),
        timeout=timeout,
        interval=1,
        what=f"job {job_id}",
    )
    return job_of(api, tenant, job_id)


def test_training_run_is_assessed_gated_and_swapped_in(
    api_server: str, tenant: TenantKeys, worker: Process
) -> None:
    make_agent(api_server, tenant)
    h = tenant.headers()
    base = httpx.post(
        f"{api_server}/v1/chat/completions",
        json={
            "model": "support",
            "messages": [{"role": "user", "content": QUESTIONS[0]}],
            "max_tokens": 24,
            "temperature": 0,
        },
        headers=h,
        timeout=120,
    ).json()["choices"][0]["message"]["content"]
    job = start(api_server, tenant)
    again = httpx.post(f"{api_server}/api/v1/agents/support/train", headers=h)
    assert again.status_code == 409, "one training run per agent at a time"

    seen_steps: set[int] = set()

    def done() -> bool:
        current = job_of(api_server, tenant, job["id"])
        seen_steps.add(current["step"])
        return bool(current["status"] in ("succeeded", "failed"))

    wait_until(done, timeout=600, interval=1, what="the training run")
    job = job_of(api_server, tenant, job["id"])
    assert job["status"] == "succeeded", job["error"] + job["log_tail"]
    assert len(seen_steps - {0}) >= 2, "progress was visible while it ran"
    curves = job["metrics"]["curves"]
    assert len(curves["reward"]) == TRAINING["steps"]
    assert {"kl", "loss", "tokens_per_s"} <= set(curves)
    result = job["result"]
    assessment = result["assessment"]
    for key in (
        "candidate_reward",
        "live_reward",
        "candidate_reward_no_context",
        "kl_to_base",
        "candidate_fact_accuracy",
        "base_fact_accuracy",
        "candidate_perplexity",
        "base_perplexity",
    ):
        assert key in assessment
    assert result["outcome"] == "promoted", result

    version = result["adapter_version"]
    adapter = httpx.get(f"{api_server}/api/v1/agents/support/adapters/{version}", headers=h).json()
    assert adapter["source"] == "training" and adapter["live"]
    assert adapter["job_id"] == job["id"]
    assert adapter["metrics"]["candidate_reward"] == assessment["candidate_reward"]
    assert adapter["metrics"]["curves"]["reward"] == curves["reward"]

    served = httpx.post(
        f"{api_server}/v1/chat/completions",
        json={
            "model": "support",
            "messages": [{"role": "user", "content": QUESTIONS[0]}],
            "max_tokens": 24,
            "temperature": 0,
        },
        headers=h,
        timeout=120,
    )
    assert served.headers["x-fastslow-adapter-version"] == str(version)
    history = httpx.get(f"{api_server}/api/v1/agents/support/activations", headers=h).json()
    assert (history[0]["kind"], history[0]["to_version"]) == ("adapter", version)
    assert history[0]["reason"].startswith("slow loop: reward"), history[0]
    # Each gate condition, at the settings this run used (none switched off).
    assert assessment["candidate_reward"] - assessment["live_reward"] >= TRAINING["margin"]
    assert assessment["kl_to_base"] <= TRAINING["kl_budget"]
    assert assessment["retention_drop"] <= TRAINING["retention_tolerance"]
    assert served.json()["choices"][0]["message"]["content"] != base, "the new adapter serves"


def test_a_candidate_that_misses_the_gate_is_kept_but_not_served(
    api_server: str, tenant: TenantKeys, worker: Process
) -> None:
    make_agent(api_server, tenant, steps=1, kl_budget=1e-9)
    job = finished(api_server, tenant, start(api_server, tenant)["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["result"]["outcome"] == "kept"
    assert "KL to the base" in job["result"]["reason"]
    h = tenant.headers()
    agent = httpx.get(f"{api_server}/api/v1/agents/support", headers=h).json()
    assert agent["live_adapter_version"] is None
    versions = httpx.get(f"{api_server}/api/v1/agents/support/adapters", headers=h).json()
    assert [(v["version"], v["live"], v["status"]) for v in versions] == [(1, False, "ready")]


def test_cancel_stops_training_and_activates_nothing(
    api_server: str, tenant: TenantKeys, worker: Process
) -> None:
    make_agent(api_server, tenant, steps=50)
    job = start(api_server, tenant)
    wait_until(
        lambda: job_of(api_server, tenant, job["id"])["step"] >= 1,
        timeout=300,
        interval=0.5,
        what="the first step",
    )
    h = tenant.headers()
    cancel = httpx.post(f"{api_server}/api/v1/jobs/{job['id']}/cancel", headers=h)
    assert cancel.status_code == 200 and cancel.json()["cancel_requested"]
    job = finished(api_server, tenant, job["id"], timeout=300)
    assert job["status"] == "cancelled"
    assert job["step"] < 50
    assert httpx.get(f"{api_server}/api/v1/agents/support/adapters", headers=h).json() == []
    assert (
        httpx.get(f"{api_server}/api/v1/agents/support", headers=h).json()["live_adapter_version"]
        is None
    )
    again = httpx.post(f"{api_server}/api/v1/jobs/{job['id']}/cancel", headers=h)
    assert again.status_code == 409


def test_population_is_refreshed_on_the_current_policy(
    api_server: str, tenant: TenantKeys, worker: Process
) -> None:
    """FST interleaving: with refresh_every=1, a fast-loop round answered by the in-training
    adapter replaces the contexts after the first step; its answers are counted."""
    completions = make_agent(
        api_server,
        tenant,
        steps=2,
        contexts="population",
        refresh_every=1,
        refresh_budget=8,
        eval_questions=2,
    )
    rate_like_users(api_server, tenant, completions)
    job = finished(api_server, tenant, start(api_server, tenant)["id"])
    assert job["status"] == "succeeded", job["error"] + job["log_tail"]
    assert "population refreshed on the current policy" in job["log_tail"], job["log_tail"]
    refreshed = job["metrics"]["curves"]["context_rollouts"]
    assert refreshed[0] > 0 and refreshed[-1] == refreshed[0], refreshed
