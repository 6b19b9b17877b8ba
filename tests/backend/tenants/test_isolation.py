"""Tenant isolation and roles on every route, generated from the app's route list.

Every route must appear in ROUTES with its access rule; a new route without an entry fails
this test, so nobody adds an endpoint without deciding who may call it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
from fastapi.testclient import TestClient

from tests.backend.helpers import chat, create_agent
from tests.conftest import PLATFORM_KEY, TenantKeys
from tests.support import make_lora

Access = Literal["public", "platform", "member", "admin"]
# scoped: names one of the tenant's resources, so another tenant gets 404;
# listing: another tenant gets 200 without the resource; own: acts on the caller's tenant only.
Scope = Literal["scoped", "listing", "own", "none"]


@dataclass(frozen=True)
class Route:
    access: Access
    scope: Scope
    body: dict[str, Any] | None = None
    files: bool = False
    query: dict[str, str] | None = None


ROUTES: dict[tuple[str, str], Route] = {
    ("GET", "/healthz"): Route("public", "none"),
    ("GET", "/readyz"): Route("public", "none"),
    ("GET", "/metrics"): Route("public", "none"),  # unless FASTSLOW_METRICS_TOKEN is set
    ("POST", "/v1/chat/completions"): Route(
        "member",
        "scoped",
        {"model": "{slug}", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
    ),
    ("GET", "/v1/models"): Route("member", "listing"),
    ("POST", "/v1/feedback"): Route("member", "scoped", {"completion_id": "{rollout}", "score": 1}),
    ("POST", "/api/v1/tenants"): Route("platform", "none", {"name": "{new_tenant}"}),
    ("GET", "/api/v1/tenants"): Route("platform", "none"),
    ("GET", "/api/v1/tenants/{tenant_id}/limits"): Route("platform", "none"),
    ("PUT", "/api/v1/tenants/{tenant_id}/limits"): Route(
        "platform", "none", {"requests_per_minute": 100000}
    ),
    ("GET", "/api/v1/tenants/{tenant_id}/audit"): Route("platform", "none"),
    ("GET", "/api/v1/limits"): Route("member", "own"),
    ("GET", "/api/v1/audit"): Route("admin", "listing"),
    ("POST", "/api/v1/keys"): Route("admin", "own", {"role": "member"}),
    ("GET", "/api/v1/keys"): Route("admin", "listing"),
    ("GET", "/api/v1/me"): Route("member", "own"),
    ("GET", "/api/v1/agents/{slug}/fast-loop"): Route("admin", "scoped"),
    ("DELETE", "/api/v1/keys/{key_id}"): Route("admin", "scoped"),
    ("POST", "/api/v1/agents"): Route("admin", "own", {"slug": "{new_slug}", "system_prompt": ""}),
    ("GET", "/api/v1/agents"): Route("member", "listing"),
    ("GET", "/api/v1/agents/{slug}"): Route("member", "scoped"),
    ("PATCH", "/api/v1/agents/{slug}"): Route("admin", "scoped", {"description": "x"}),
    ("GET", "/api/v1/agents/{slug}/activations"): Route("admin", "scoped"),
    ("GET", "/api/v1/agents/{slug}/prompts"): Route("admin", "scoped"),
    ("POST", "/api/v1/agents/{slug}/prompts"): Route(
        "admin", "scoped", {"instructions": "x", "activate": False}
    ),
    ("GET", "/api/v1/agents/{slug}/prompts/{version}"): Route("admin", "scoped"),
    ("GET", "/api/v1/agents/{slug}/prompts/diff"): Route(
        "admin", "scoped", query={"a": "1", "b": "1"}
    ),
    ("POST", "/api/v1/agents/{slug}/prompts/{version}/activate"): Route("admin", "scoped", {}),
    ("GET", "/api/v1/agents/{slug}/adapters"): Route("admin", "scoped"),
    ("POST", "/api/v1/agents/{slug}/adapters"): Route("admin", "scoped", files=True),
    ("GET", "/api/v1/agents/{slug}/adapters/{version}"): Route("admin", "scoped"),
    ("POST", "/api/v1/agents/{slug}/adapters/activate"): Route(
        "admin", "scoped", {"version": None}
    ),
    ("POST", "/api/v1/agents/{slug}/evaluate"): Route("admin", "scoped", {"prompts": ["Hi"]}),
    ("POST", "/api/v1/agents/{slug}/optimize"): Route("admin", "scoped"),
    ("POST", "/api/v1/agents/{slug}/train"): Route("admin", "scoped"),
    ("GET", "/api/v1/jobs"): Route("admin", "listing"),
    ("GET", "/api/v1/jobs/{job_id}"): Route("admin", "scoped"),
    ("POST", "/api/v1/jobs/{job_id}/cancel"): Route("admin", "scoped"),
    ("POST", "/api/v1/jobs/{job_id}/retry"): Route("admin", "scoped"),
    ("GET", "/api/v1/agents/{slug}/schedule"): Route("admin", "scoped"),
    ("PUT", "/api/v1/agents/{slug}/schedule"): Route("admin", "scoped", {"interval_s": 3600}),
    ("DELETE", "/api/v1/agents/{slug}/schedule"): Route("admin", "scoped"),
    ("GET", "/api/v1/rollouts"): Route("admin", "listing"),
    ("GET", "/api/v1/rollouts/{rollout_id}"): Route("admin", "scoped"),
}


def test_every_route_has_an_access_rule(app_client: TestClient) -> None:
    spec = app_client.get("/openapi.json").json()
    served = {(m.upper(), path) for path, item in spec["paths"].items() for m in item}
    assert served == set(ROUTES), (
        f"routes without an isolation rule: {sorted(served - set(ROUTES))}; "
        f"rules for missing routes: {sorted(set(ROUTES) - served)}"
    )


@dataclass
class World:
    """Tenant A's resources, which tenant B must never reach."""

    a: TenantKeys
    b: TenantKeys
    values: dict[str, str]
    lora: Path


@pytest.fixture(scope="module")
def lora(tmp_path_factory: pytest.TempPathFactory, base_model_dir: Path) -> Path:
    return make_lora(base_model_dir, tmp_path_factory.mktemp("iso-lora"), seed=2)


@pytest.fixture
def world(
    app_client: TestClient, tenant: TenantKeys, other_tenant: TenantKeys, lora: Path
) -> World:
    create_agent(app_client, tenant, slug="secret-agent")
    rollout = chat(app_client, tenant, "Hi", model="secret-agent").json()["id"]
    with (
        (lora / "adapter_config.json").open("rb") as c,
        (lora / "adapter_model.safetensors").open("rb") as w,
    ):
        app_client.post(
            "/api/v1/agents/secret-agent/adapters",
            files={"config": c, "weights": w},
            headers=tenant.headers(),
        ).raise_for_status()
    # The job is another agent's: evaluations run one per agent at a time, and the owner's
    # own call on the evaluate route (before this job is cancelled and retried) must succeed.
    create_agent(app_client, tenant, slug="secret-helper")
    job = app_client.post(
        "/api/v1/agents/secret-helper/evaluate", json={"prompts": ["Hi"]}, headers=tenant.headers()
    ).json()["id"]
    app_client.put(
        "/api/v1/agents/secret-agent/schedule", json={"interval_s": 3600}, headers=tenant.headers()
    ).raise_for_status()
    # A spare key for the revoke route, so the member key used below stays valid.
    spare = app_client.post(
        "/api/v1/keys", json={"role": "member", "name": "spare"}, headers=tenant.headers()
    ).json()["id"]
    values = {
        "slug": "secret-agent",
        "rollout": rollout,
        "rollout_id": rollout,
        "version": "1",
        "job_id": job,
        "key_id": spare,
        "tenant_id": str(tenant.tenant_id),
    }
    return World(tenant, other_tenant, values, lora)


def _call(
    client: TestClient,
    method: str,
    path: str,
    route: Route,
    world: World,
    key: str | None,
    counter: list[int],
) -> Any:
    counter[0] += 1
    fill = {**world.values, "new_slug": f"new-{counter[0]}", "new_tenant": f"n-{counter[0]}"}
    url = path.format(**fill)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = route.body
    if body is not None:
        body = {k: (v.format(**fill) if isinstance(v, str) else v) for k, v in body.items()}
    if route.files:
        with (
            (world.lora / "adapter_config.json").open("rb") as c,
            (world.lora / "adapter_model.safetensors").open("rb") as w,
        ):
            return client.request(method, url, files={"config": c, "weights": w}, headers=headers)
    return client.request(method, url, json=body, headers=headers, params=route.query)


def test_isolation_and_roles_on_every_route(app_client: TestClient, world: World) -> None:
    counter = [0]
    problems: list[str] = []
    a, b = world.a, world.b
    # Deletions last: the owner's own call removes what later routes read.
    for (method, path), route in sorted(ROUTES.items(), key=lambda r: (r[0][0] == "DELETE", r)):
        call = functools.partial(_call, app_client, method, path, route, world, counter=counter)

        label = f"{method} {path}"
        if route.access == "public":
            if call(None).status_code != 200:
                problems.append(f"{label}: public route refused")
            continue
        if call(None).status_code != 401:
            problems.append(f"{label}: no key must be 401")
        if route.access == "platform":
            for key in (a.admin, a.member):
                if call(key).status_code != 403:
                    problems.append(f"{label}: tenant key must be 403")
            if call(PLATFORM_KEY).status_code >= 400:
                problems.append(f"{label}: platform key refused")
            continue
        if call(PLATFORM_KEY).status_code != 403:
            problems.append(f"{label}: platform key on a tenant route must be 403")
        if route.access == "admin" and call(a.member).status_code != 403:
            problems.append(f"{label}: member key on an admin route must be 403")
        outsider = b.admin
        response = call(outsider)
        if route.scope == "scoped" and response.status_code != 404:
            problems.append(f"{label}: other tenant got {response.status_code}, not 404")
        if route.scope == "listing":
            leaked = [v for v in world.values.values() if v != "1" and v in response.text]
            if response.status_code != 200 or leaked:
                problems.append(f"{label}: other tenant listing leaked {leaked}")
        owner = a.admin if route.access == "admin" else a.member
        if call(owner).status_code >= 400:
            problems.append(f"{label}: the owner was refused")
    assert not problems, "\n".join(problems)
