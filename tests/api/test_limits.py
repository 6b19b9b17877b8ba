"""Per-tenant rate limits and token quotas: 429 with Retry-After, counters shared by replicas,
per-tenant overrides set with the platform key."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from backend.api.app import create_app
from backend.config import Settings
from backend.db import Database
from backend.engines.local import LocalEngine
from backend.errors import RateLimited
from backend.limits.models import UsageCounter
from backend.limits.service import REQUESTS, Limits, count_request
from tests.api.helpers import chat, create_agent, sse_events
from tests.conftest import PLATFORM_KEY, TenantKeys

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
    generated = charged["usage"]["completion_tokens"]
    assert generated > 0
    answered = 1
    while generated < quota:
        assert answered < 5, "the model keeps answering with almost no tokens"
        response = chat(app_client, tenant, f"Describe delivery option {answered} at length.")
        assert response.status_code == 200, response.text
        generated += response.json()["usage"]["completion_tokens"]
        answered += 1

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
