"""The audit log: who changed what, when and why; tenant-scoped, paginated, and readable by the
platform key."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient

from tests.backend.helpers import create_agent
from tests.conftest import PLATFORM_KEY, TenantKeys

PLATFORM = {"Authorization": f"Bearer {PLATFORM_KEY}"}


def why(tenant: TenantKeys, reason: str) -> dict[str, str]:
    return {**tenant.headers(), "X-Fastslow-Reason": reason}


def audit_log(client: TestClient, tenant: TenantKeys, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/api/v1/audit", headers=tenant.headers(), params=params)
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()
    return entries


def test_admin_actions_are_audited_with_who_what_and_why(
    app_client: TestClient, tenant: TenantKeys
) -> None:
    me = app_client.get("/api/v1/me", headers=tenant.headers()).json()
    key = app_client.post(
        "/api/v1/keys", json={"role": "member", "name": "bob"}, headers=why(tenant, "onboard bob")
    ).json()
    app_client.delete(f"/api/v1/keys/{key['id']}", headers=why(tenant, "bob left"))
    create_agent(app_client, tenant, slug="helper")
    app_client.post(
        "/api/v1/agents/helper/prompts",
        json={"instructions": "Be brief.", "activate": False},
        headers=tenant.headers(),
    ).raise_for_status()
    app_client.post(
        "/api/v1/agents/helper/prompts/2/activate", json={}, headers=why(tenant, "shorter answers")
    ).raise_for_status()
    app_client.put(
        "/api/v1/agents/helper/schedule", json={"interval_s": 3600}, headers=tenant.headers()
    ).raise_for_status()
    job = app_client.post(
        "/api/v1/agents/helper/evaluate", json={"prompts": ["Hi"]}, headers=tenant.headers()
    ).json()
    app_client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=why(tenant, "not now"))

    entries = audit_log(app_client, tenant)
    at = [e["at"] for e in entries]
    assert at == sorted(at, reverse=True), "newest first"
    seen = {(e["action"], e["target"]): e for e in entries}
    expected = {
        ("key.create", f"key:{key['id']}"),
        ("key.revoke", f"key:{key['id']}"),
        ("agent.create", "agent:helper"),
        ("prompt.create", "agent:helper"),
        ("prompt.activate", "agent:helper"),
        ("schedule.put", "agent:helper"),
        ("job.start", f"job:{job['id']}"),
        ("job.cancel", f"job:{job['id']}"),
        ("tenant.create", f"tenant:{tenant.tenant_id}"),
    }
    assert expected <= set(seen), f"missing: {expected - set(seen)}"
    created = seen[("key.create", f"key:{key['id']}")]
    assert created["actor"] == "key" and created["actor_key_id"] == me["key_id"]
    assert created["reason"] == "onboard bob"
    assert created["details"] == {"role": "member", "name": "bob"}
    assert seen[("key.revoke", f"key:{key['id']}")]["reason"] == "bob left"
    assert seen[("job.cancel", f"job:{job['id']}")]["reason"] == "not now"
    # The prompt's move is the Activation row written with it, with the header as its reason.
    moves = [e for e in entries if e["action"] == "prompt.activate"]
    assert [(m["details"], m["reason"]) for m in moves] == [
        ({"from_version": 1, "to_version": 2}, "shorter answers"),
        ({"from_version": None, "to_version": 1}, "agent created"),
    ]
    assert seen[("tenant.create", f"tenant:{tenant.tenant_id}")]["actor"] == "platform"


def test_the_platform_reads_and_writes_the_log_too(
    app_client: TestClient, tenant: TenantKeys, other_tenant: TenantKeys
) -> None:
    app_client.put(
        f"/api/v1/tenants/{tenant.tenant_id}/limits",
        json={"requests_per_minute": 1000},
        headers={**PLATFORM, "X-Fastslow-Reason": "bigger plan"},
    ).raise_for_status()
    (change,) = [e for e in audit_log(app_client, tenant) if e["action"] == "tenant.limits.set"]
    assert change["actor"] == "platform" and change["actor_key_id"] is None
    assert change["reason"] == "bigger plan"
    after = change["details"]["after"]
    assert after == {"requests_per_minute": 1000, "tokens_per_day": None, "jobs_per_day": None}

    platform_view = app_client.get(f"/api/v1/tenants/{tenant.tenant_id}/audit", headers=PLATFORM)
    assert platform_view.status_code == 200
    assert change["id"] in {e["id"] for e in platform_view.json()}
    # Each tenant's log holds only its own entries.
    assert change["id"] not in {e["id"] for e in audit_log(app_client, other_tenant)}
    missing = app_client.get(f"/api/v1/tenants/{uuid.uuid4()}/audit", headers=PLATFORM)
    assert missing.status_code == 404


def test_pages_cover_the_log_once(app_client: TestClient, tenant: TenantKeys) -> None:
    for i in range(5):
        app_client.post(
            "/api/v1/keys", json={"name": f"k{i}"}, headers=tenant.headers()
        ).raise_for_status()
    everything = audit_log(app_client, tenant, limit=100)
    assert len(everything) >= 6
    paged: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 2}
    while page := audit_log(app_client, tenant, **params):
        assert len(page) <= 2
        paged += page
        params = {"limit": 2, "before": page[-1]["at"]}
    assert [e["id"] for e in paged] == [e["id"] for e in everything]


def test_refused_and_failed_actions_leave_no_entry(
    app_client: TestClient, tenant: TenantKeys
) -> None:
    before = audit_log(app_client, tenant)
    unknown = app_client.delete(f"/api/v1/keys/{uuid.uuid4()}", headers=tenant.headers())
    assert unknown.status_code == 404
    member = app_client.post("/api/v1/keys", json={"name": "x"}, headers=tenant.headers("member"))
    assert member.status_code == 403
    assert audit_log(app_client, tenant) == before
    # A time without a zone is ambiguous: a clear 422, not a guess.
    naive = app_client.get(
        "/api/v1/audit", params={"before": "2026-01-01T00:00:00"}, headers=tenant.headers()
    )
    assert naive.status_code == 422
