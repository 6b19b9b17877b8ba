"""Per-tenant rate limits, token quotas, job budgets and context caps: 429 with Retry-After,
counters shared by replicas, per-tenant overrides set with the platform key; a prompt over a
context cap is a 400 before the engine sees it."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from backend.agents.service import get_agent
from backend.app import create_app
from backend.chat.context import count_prompt_tokens
from backend.config import Settings
from backend.db import Database
from backend.engines import Generation, GenerationRequest, StreamChunk
from backend.engines.local import LocalEngine
from backend.errors import RateLimited
from backend.jobs.models import Job, JobKind
from backend.jobs.queue import make_celery
from backend.limits.models import UsageCounter
from backend.limits.service import REQUESTS, Limits, count_request, default_limits
from backend.prompts.context import Context
from tests.backend.helpers import chat, create_agent, sse_events
from tests.conftest import PLATFORM_KEY, TenantKeys
from worker.fast.triggers import dispatch_due

PLATFORM = {"Authorization": f"Bearer {PLATFORM_KEY}"}


@pytest.fixture(scope="module")
def second_replica(settings: Settings, local_engine: LocalEngine) -> Iterator[TestClient]:
    """Another API replica: its own app, process state and database pool, the same database."""
    with TestClient(create_app(settings, engine=local_engine)) as client:
        yield client


def set_limits(client: TestClient, tenant: TenantKeys, **limits: int | None) -> dict[str, Any]:
    response = client.put(
        f"/api/v1/tenants/{tenant.tenant_id}/limits",
        json=limits,
        headers={**PLATFORM, "X-Fastslow-Reason": "test"},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def away_from_the_minute_edge() -> None:
    """Counting windows are whole minutes: start a short sequence well inside one."""
    left = 60 - time.time() % 60
    if left < 8:
        time.sleep(left + 0.2)


def test_rate_limit_is_per_tenant_and_shared_by_replicas(
    app_client: TestClient,
    second_replica: TestClient,
    tenant: TenantKeys,
    other_tenant: TenantKeys,
) -> None:
    set_limits(app_client, tenant, requests_per_minute=4)
    away_from_the_minute_edge()
    replicas = [app_client, second_replica]
    for i in range(4):  # two requests on each replica: the limit counts them together
        response = replicas[i % 2].get("/api/v1/me", headers=tenant.headers("member"))
        assert response.status_code == 200, (i, response.text)

    refused = second_replica.get("/api/v1/agents", headers=tenant.headers())
    assert refused.status_code == 429, refused.text
    assert refused.json()["code"] == "rate_limit_exceeded"
    assert "4 requests per minute" in refused.json()["detail"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60

    # On the OpenAI routes the refusal has OpenAI's shape, so its clients back off.
    openai = app_client.get("/v1/models", headers=tenant.headers("member"))
    assert openai.status_code == 429
    assert openai.json()["error"]["type"] == "rate_limit_error"
    assert openai.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(openai.headers["Retry-After"]) <= 60

    # Another tenant is not slowed down by this one.
    assert app_client.get("/api/v1/me", headers=other_tenant.headers()).status_code == 200

    # The platform sees the count; back to the default lifts the limit on every replica.
    usage = app_client.get(f"/api/v1/tenants/{tenant.tenant_id}/limits", headers=PLATFORM).json()
    assert usage["requests_per_minute"]["limit"] == 4
    assert usage["requests_per_minute"]["used"] >= 6
    assert usage["requests_per_minute"]["overridden"] is True
    set_limits(app_client, tenant, requests_per_minute=None)
    assert second_replica.get("/api/v1/me", headers=tenant.headers()).status_code == 200
    mine = app_client.get("/api/v1/limits", headers=tenant.headers("member")).json()
    assert mine["requests_per_minute"]["overridden"] is False


def test_zero_means_no_limit(
    app_client: TestClient, tenant: TenantKeys, database: Database
) -> None:
    set_limits(app_client, tenant, requests_per_minute=1)
    away_from_the_minute_edge()
    assert app_client.get("/api/v1/me", headers=tenant.headers()).status_code == 200
    assert app_client.get("/api/v1/me", headers=tenant.headers()).status_code == 429
    set_limits(app_client, tenant, requests_per_minute=0)
    for _ in range(3):
        assert app_client.get("/api/v1/me", headers=tenant.headers()).status_code == 200


def test_token_quota_is_charged_from_real_usage(
    app_client: TestClient, second_replica: TestClient, tenant: TenantKeys
) -> None:
    create_agent(app_client, tenant)
    quota = 8
    set_limits(app_client, tenant, tokens_per_day=quota)

    # A streamed answer is charged too (what its final usage chunk reports).
    streamed = chat(
        app_client,
        tenant,
        "Tell me about your shop.",
        stream=True,
        stream_options={"include_usage": True},
    )
    assert streamed.status_code == 200
    charged = next(e for e in sse_events(streamed.text) if isinstance(e, dict) and e.get("usage"))
    # Prompt tokens count as well as completion tokens: one answer is over this quota.
    generated = charged["usage"]["total_tokens"]
    assert charged["usage"]["completion_tokens"] > 0
    assert generated > quota

    # The other replica refuses: the quota is counted in the shared database.
    refused = chat(second_replica, tenant, "One more?")
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert error["code"] == "insufficient_quota" and error["type"] == "rate_limit_error"
    assert 1 <= int(refused.headers["Retry-After"]) <= 86_400
    # Only generation is refused: the tenant's other calls go on.
    assert app_client.get("/v1/models", headers=tenant.headers()).status_code == 200

    usage = app_client.get("/api/v1/limits", headers=tenant.headers()).json()["tokens_per_day"]
    assert usage == {
        "limit": quota,
        "used": generated,
        "window_s": 86_400,
        "resets_at": usage["resets_at"],
        "overridden": True,
    }
    set_limits(app_client, tenant, tokens_per_day=generated + 100)
    assert chat(second_replica, tenant, "And now?", max_tokens=2).status_code == 200


def test_overrides_are_validated(app_client: TestClient, tenant: TenantKeys) -> None:
    url = f"/api/v1/tenants/{tenant.tenant_id}/limits"
    for body in ({"requests_per_minute": -1}, {"tokens_per_day": 10**16}, {"rpm": 3}):
        response = app_client.put(url, json=body, headers=PLATFORM)
        assert response.status_code == 422, body
    missing = app_client.put(
        f"/api/v1/tenants/{uuid.uuid4()}/limits", json={"tokens_per_day": 5}, headers=PLATFORM
    )
    assert missing.status_code == 404
    as_admin = app_client.put(url, json={"tokens_per_day": 0}, headers=tenant.headers())
    assert as_admin.status_code == 403

    defaults = app_client.get(url, headers=PLATFORM).json()
    settings: Settings = app_client.app.state.settings  # type: ignore[attr-defined]
    assert defaults["requests_per_minute"]["limit"] == settings.tenant_requests_per_minute
    assert defaults["tokens_per_day"]["limit"] == settings.tenant_tokens_per_day
    assert not defaults["requests_per_minute"]["overridden"]


def test_counting_is_atomic_and_windows_roll_over(tenant: TenantKeys, database: Database) -> None:
    """Concurrent counts lose no update; a new window starts from zero and drops the old."""
    start = 1_800_000_000 - 1_800_000_000 % 60  # a window boundary, far from now
    limits = Limits(requests_per_minute=1000, tokens_per_day=0)
    errors: list[BaseException] = []

    def count(n: int) -> None:
        try:
            with database.session() as session:
                for _ in range(n):
                    count_request(
                        session, tenant_id=tenant.tenant_id, defaults=limits, now=start + 1
                    )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=count, args=(25,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []

    def counters() -> dict[int, int]:
        with database.session() as session:
            rows = session.execute(
                select(UsageCounter.window_start, UsageCounter.used).where(
                    UsageCounter.tenant_id == tenant.tenant_id, UsageCounter.kind == REQUESTS
                )
            )
            return {int(s): int(u) for s, u in rows}

    assert counters() == {start: 100}
    tight = Limits(requests_per_minute=100, tokens_per_day=0)
    with database.session() as session, pytest.raises(RateLimited) as refused:
        count_request(session, tenant_id=tenant.tenant_id, defaults=tight, now=start + 15)
    assert refused.value.retry_after_s == 45
    with database.session() as session:
        count_request(session, tenant_id=tenant.tenant_id, defaults=tight, now=start + 60)
    assert counters() == {start + 60: 1}


def test_prompt_tokens_are_charged_with_completion_tokens(
    app_client: TestClient, tenant: TenantKeys
) -> None:
    """A long prompt is work too: the quota is charged what the engine read and wrote."""
    create_agent(app_client, tenant)
    set_limits(app_client, tenant, tokens_per_day=1_000_000)
    question = "Please summarise our whole returns policy for me. " * 20
    response = chat(app_client, tenant, question, max_tokens=4)
    assert response.status_code == 200, response.text
    usage = response.json()["usage"]
    assert usage["prompt_tokens"] > 200 > usage["completion_tokens"]
    used = app_client.get("/api/v1/limits", headers=tenant.headers()).json()["tokens_per_day"]
    assert used["used"] == usage["prompt_tokens"] + usage["completion_tokens"]


class CountingEngine:
    """The real local engine, counting the generations it is asked for (the boundary the
    context cap must stop requests at)."""

    def __init__(self, engine: LocalEngine) -> None:
        self.engine = engine
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    async def generate(self, request: GenerationRequest) -> Generation:
        self.calls += 1
        return await self.engine.generate(request)

    def stream(self, request: GenerationRequest) -> AsyncGenerator[StreamChunk, None]:
        self.calls += 1
        return self.engine.stream(request)


def test_context_window_refuses_long_prompts_before_the_engine(
    settings: Settings,
    local_engine: LocalEngine,
    app_client: TestClient,
    tenant: TenantKeys,
    database: Database,
) -> None:
    window = 160
    engine = CountingEngine(local_engine)
    small = settings.model_copy(update={"max_context_tokens": window})
    create_agent(app_client, tenant, max_tokens_cap=400)
    set_limits(app_client, tenant, tokens_per_day=1_000_000)
    with TestClient(create_app(small, engine=engine)) as client:
        # A short question fits; without max_tokens the agent's cap shrinks to what is left.
        fits = chat(client, tenant, "Hi", max_tokens=None)
        assert fits.status_code == 200, fits.text
        served = fits.json()["usage"]
        assert served["prompt_tokens"] + served["completion_tokens"] <= window
        assert engine.calls == 1
        # The count the API checks is the engine's own.
        with database.session() as session:
            agent = get_agent(session, tenant_id=tenant.tenant_id, slug="support")
            assert agent.live_prompt is not None
            messages = Context(agent.live_prompt.instructions).messages(
                [{"role": "user", "content": "Hi"}]
            )
        assert count_prompt_tokens(small.base_model_path, messages) == served["prompt_tokens"]
        used_before = _tokens_used(client, tenant)

        long = "Tell me everything about shipping to Norway, in detail. " * 30
        for stream in (False, True):
            refused = chat(client, tenant, long, stream=stream)
            assert refused.status_code == 400, refused.text
            error = refused.json()["error"]
            assert error["code"] == "context_length_exceeded", error
            assert error["type"] == "invalid_request_error" and error["param"] == "messages"
            assert f"maximum context length is {window} tokens" in error["message"]
        # Prompt and max_tokens together must fit: asking for more than is left is refused.
        too_much = chat(client, tenant, "Hi", max_tokens=window)
        assert too_much.status_code == 400
        assert too_much.json()["error"]["code"] == "context_length_exceeded"
        assert "max_tokens" in too_much.json()["error"]["message"]

        assert engine.calls == 1, "a refused request reached the engine"
        assert _tokens_used(client, tenant) == used_before, "a refused request was charged"
        rollouts = client.get("/api/v1/rollouts", headers=tenant.headers()).json()
        assert len(rollouts) == 1


def test_an_agent_caps_its_prompt_tokens(app_client: TestClient, tenant: TenantKeys) -> None:
    created = create_agent(app_client, tenant, max_prompt_tokens=60)
    assert created["max_prompt_tokens"] == 60
    assert chat(app_client, tenant, "Hi").status_code == 200
    long = "Where is my parcel? I ordered it weeks ago and nobody answers. " * 5
    refused = chat(app_client, tenant, long)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert "'support' allows at most 60 prompt tokens" in error["message"]
    for bad in (-1, 10**7, "many"):
        response = app_client.patch(
            "/api/v1/agents/support", json={"max_prompt_tokens": bad}, headers=tenant.headers()
        )
        assert response.status_code == 422, bad
    # 0 removes the agent's own cap; the deployment's window still applies.
    lifted = app_client.patch(
        "/api/v1/agents/support", json={"max_prompt_tokens": 0}, headers=tenant.headers()
    )
    assert lifted.status_code == 200 and lifted.json()["max_prompt_tokens"] is None
    assert chat(app_client, tenant, long).status_code == 200


def _tokens_used(client: TestClient, tenant: TenantKeys) -> int:
    limits = client.get("/api/v1/limits", headers=tenant.headers()).json()
    return int(limits["tokens_per_day"]["used"])


def _start(client: TestClient, tenant: TenantKeys, slug: str, kind: str) -> Any:
    body = {"prompts": ["Hi"]} if kind == "evaluate" else None
    return client.post(f"/api/v1/agents/{slug}/{kind}", json=body, headers=tenant.headers())


def test_jobs_are_one_per_kind_per_agent_and_within_a_daily_budget(
    app_client: TestClient, tenant: TenantKeys, other_tenant: TenantKeys
) -> None:
    create_agent(app_client, tenant, slug="a")
    create_agent(app_client, tenant, slug="b")
    create_agent(app_client, other_tenant, slug="a")
    set_limits(app_client, tenant, jobs_per_day=3)

    first = _start(app_client, tenant, "a", "evaluate")
    assert first.status_code == 202, first.text
    # One evaluation per agent at a time, like optimisation and training.
    again = _start(app_client, tenant, "a", "evaluate")
    assert again.status_code == 409, again.text
    assert _start(app_client, tenant, "a", "optimize").status_code == 202
    assert _start(app_client, tenant, "b", "train").status_code == 202

    # The budget is used up (a refused duplicate was not charged): every kind is a 429.
    for slug, kind in (("b", "evaluate"), ("b", "optimize"), ("a", "train")):
        refused = _start(app_client, tenant, slug, kind)
        assert refused.status_code == 429, (kind, refused.text)
        assert refused.json()["code"] == "insufficient_quota"
        assert "3 evaluation, optimisation and training jobs per day" in refused.json()["detail"]
        assert 1 <= int(refused.headers["Retry-After"]) <= 86_400
    # Cancelling does not give a started job back; retrying it is a new job, refused too.
    job_id = first.json()["id"]
    cancel = app_client.post(f"/api/v1/jobs/{job_id}/cancel", headers=tenant.headers())
    assert cancel.status_code == 200
    retried = app_client.post(f"/api/v1/jobs/{job_id}/retry", headers=tenant.headers())
    assert retried.status_code == 429, retried.text

    usage = app_client.get("/api/v1/limits", headers=tenant.headers()).json()["jobs_per_day"]
    assert (usage["limit"], usage["used"], usage["overridden"]) == (3, 3, True)
    # Another tenant has its own budget.
    assert _start(app_client, other_tenant, "a", "evaluate").status_code == 202
    # The platform lifts it; the default comes from the settings.
    set_limits(app_client, tenant, jobs_per_day=0)
    assert _start(app_client, tenant, "b", "evaluate").status_code == 202
    set_limits(app_client, tenant)
    defaults = app_client.get(f"/api/v1/tenants/{tenant.tenant_id}/limits", headers=PLATFORM)
    settings: Settings = app_client.app.state.settings  # type: ignore[attr-defined]
    assert defaults.json()["jobs_per_day"]["limit"] == settings.tenant_jobs_per_day


def test_beat_does_not_start_runs_over_the_job_budget(
    app_client: TestClient, tenant: TenantKeys, database: Database, settings: Settings
) -> None:
    """A due fast loop of a tenant over its budget is simply not started: no error, no job,
    and beat's tick goes on."""
    create_agent(app_client, tenant, fast_loop={"min_new_feedback": 1})
    completion_id = chat(app_client, tenant, "Hi").json()["id"]
    rated = app_client.post(
        "/v1/feedback", json={"completion_id": completion_id, "score": -1}, headers=tenant.headers()
    )
    assert rated.status_code == 201
    set_limits(app_client, tenant, jobs_per_day=1)
    assert _start(app_client, tenant, "support", "evaluate").status_code == 202

    celery = make_celery(settings)
    started = dispatch_due(database, celery, limits=default_limits(settings))
    with database.session() as session:
        optimize = session.scalars(
            select(Job).where(Job.tenant_id == tenant.tenant_id, Job.kind == JobKind.OPTIMIZE)
        ).all()
    assert optimize == []
    assert not set(started) & {j.id for j in optimize}
    status = app_client.get("/api/v1/agents/support/fast-loop", headers=tenant.headers()).json()
    assert status["due_reason"] is not None and status["running_job_id"] is None

    # With room again, the same tick starts it.
    set_limits(app_client, tenant, jobs_per_day=2)
    dispatch_due(database, celery, limits=default_limits(settings))
    status = app_client.get("/api/v1/agents/support/fast-loop", headers=tenant.headers()).json()
    assert status["running_job_id"] is not None
