"""Fuzzing every route from the OpenAPI schema (schemathesis): no input may give a 5xx, and each
documented response must match its schema. Runs in-process against the real app (real
database, real model) with real keys; a handful of examples per operation keeps it inside CI's
time budget."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import response_schema_conformance

from backend.app import create_app
from backend.config import Settings
from backend.db import Database
from backend.engines.local import LocalEngine
from backend.tenants.models import Role
from backend.tenants.service import create_api_key, create_tenant
from tests.backend.helpers import chat, create_agent
from tests.conftest import PLATFORM_KEY, TenantKeys

MAX_EXAMPLES = 12

# The schema as the app serves it; requests go to the app instance of the `fuzzed` fixture.
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())
# Deterministic, and nothing saved between runs: every CI run fuzzes the same inputs.
schema.config.generation.update(max_examples=MAX_EXAMPLES, deterministic=True, database="none")
# The coverage phase sends each operation's boundary and negative cases; sending every other
# HTTP method to each path as well would only re-test the router's 405 some 300 times.
schema.config.phases.coverage.unexpected_methods = set()


@dataclass(frozen=True)
class Fuzzed:
    app: FastAPI
    admin_key: str
    # Path parameters that name real resources, so handlers run past their lookups.
    path: dict[str, str]
    statuses: Counter[int] = field(default_factory=Counter)  # by class: 2, 4, 5


def _tenant(database: Database) -> TenantKeys:
    with database.session() as session:
        tenant, admin = create_tenant(session, name=f"fuzz-{uuid.uuid4().hex[:10]}")
        member = create_api_key(session, tenant_id=tenant.id, role=Role.MEMBER, name="m")
    return TenantKeys(tenant.id, tenant.name, admin.plaintext, member.plaintext)


@pytest.fixture(scope="module")
def fuzzed(
    settings: Settings, local_engine: LocalEngine, app_client: TestClient, database: Database
) -> Iterator[Fuzzed]:
    """A tenant with an agent, a rollout, a job and a spare key for the fuzzer to find, and
    the app it fuzzes (its own instance, sharing the run's database and model)."""
    tenant, victim = _tenant(database), _tenant(database)
    # Fuzzing sends hundreds of requests a minute: the tenant's limits would refuse them.
    app_client.put(
        f"/api/v1/tenants/{tenant.tenant_id}/limits",
        json={"requests_per_minute": 0, "tokens_per_day": 0},
        headers={"Authorization": f"Bearer {PLATFORM_KEY}"},
    ).raise_for_status()
    create_agent(app_client, tenant, slug="fuzz", max_tokens_cap=4)
    rollout = chat(app_client, tenant, "Hi", model="fuzz", max_tokens=2).json()["id"]
    job = app_client.post(
        "/api/v1/agents/fuzz/evaluate", json={"prompts": ["Hi"]}, headers=tenant.headers()
    ).json()["id"]
    # Cancelled at once: the workers later tests start skip its message.
    app_client.post(f"/api/v1/jobs/{job}/cancel", headers=tenant.headers()).raise_for_status()
    spare = app_client.post(
        "/api/v1/keys", json={"name": "spare"}, headers=tenant.headers()
    ).json()["id"]
    path = {
        "slug": "fuzz",
        "job_id": job,
        "rollout_id": rollout,
        "key_id": spare,
        # The platform routes act on another tenant, so a fuzzed limit cannot stop this one.
        "tenant_id": str(victim.tenant_id),
    }
    # The jobs the fuzzer starts go to an in-process broker, not to the workers of later tests.
    isolated = settings.model_copy(update={"broker_url": "memory://"})
    fuzzed = Fuzzed(create_app(isolated, engine=local_engine), tenant.admin, path)
    yield fuzzed
    asgi.shutdown_lifespans()  # stops the lifespan schemathesis started for `app`
    # A fuzzed schedule must not fire in the schedule tests that share this database.
    app_client.delete("/api/v1/agents/fuzz/schedule", headers=tenant.headers())
    # A fuzzer refused at the door proves nothing: most calls must reach the handlers.
    total = sum(fuzzed.statuses.values())
    assert total == 0 or fuzzed.statuses[2] > total // 10, f"fuzzing got {fuzzed.statuses}"


@schema.parametrize()
def test_no_input_breaks_the_api(case: Case[Any], fuzzed: Fuzzed) -> None:
    for name in case.path_parameters or {}:
        if name in fuzzed.path:
            case.path_parameters[name] = fuzzed.path[name]
    if case.path == "/v1/chat/completions" and isinstance(case.body, dict) and "model" in case.body:
        case.body["model"] = "fuzz"  # the agent exists, so valid bodies reach the model
    key = PLATFORM_KEY if case.path.startswith("/api/v1/tenants") else fuzzed.admin_key
    response = case.call(app=fuzzed.app, headers={"Authorization": f"Bearer {key}"})
    fuzzed.statuses[response.status_code // 100] += 1
    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])


@pytest.mark.parametrize(
    ("path", "param"),
    [("/api/v1/rollouts", "since"), ("/api/v1/rollouts", "before"), ("/api/v1/audit", "before")],
)
def test_times_without_a_zone_are_refused(
    app_client: TestClient, tenant: TenantKeys, path: str, param: str
) -> None:
    """The fuzzer sends RFC 3339 times, which always have a zone; a naive one was a 500."""
    naive = app_client.get(path, params={param: "2026-01-01T00:00:00"}, headers=tenant.headers())
    assert naive.status_code == 422, naive.text
    aware = app_client.get(path, params={param: "2026-01-01T00:00:00Z"}, headers=tenant.headers())
    assert aware.status_code == 200, aware.text


def test_nul_characters_are_refused(app_client: TestClient, tenant: TenantKeys) -> None:
    """PostgreSQL cannot store NUL: found by the fuzzer as 500s on its stack."""
    create_agent(app_client, tenant)
    nul = chat(app_client, tenant, "Hi\x00there")
    assert nul.status_code == 400, nul.text
    assert nul.json()["error"]["param"] == "messages[0].content"
    stored = app_client.post(
        "/api/v1/agents/support/prompts",
        json={"instructions": "Be\x00brief.", "activate": False},
        headers=tenant.headers(),
    )
    # Refused on every stack (PostgreSQL could not store it; no text needs it), naming the field.
    assert stored.status_code == 422, stored.text
    assert stored.json()["code"] == "invalid_value"
    assert stored.json()["param"] == "instructions"
