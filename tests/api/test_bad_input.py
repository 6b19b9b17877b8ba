"""Bad requests to the serving path: a clear 4xx in the OpenAI error shape, nothing stored."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from backend.db import Database
from backend.rollouts.models import Rollout
from tests.api.helpers import create_agent
from tests.conftest import TenantKeys


def _rollouts(database: Database) -> int:
    with database.session() as session:
        return int(session.scalar(select(func.count()).select_from(Rollout)) or 0)


def _user(content: str = "Hi") -> dict[str, str]:
    return {"role": "user", "content": content}


BAD_BODIES: dict[str, tuple[dict[str, Any], int, str | None]] = {
    "empty messages": ({"model": "support", "messages": []}, 400, "messages"),
    "no messages": ({"model": "support"}, 400, "messages"),
    "wrong role": (
        {"model": "support", "messages": [{"role": "robot", "content": "x"}]},
        400,
        None,
    ),
    "tool role": ({"model": "support", "messages": [{"role": "tool", "content": "x"}]}, 400, None),
    "last not user": (
        {"model": "support", "messages": [_user(), {"role": "assistant", "content": "x"}]},
        400,
        None,
    ),
    "system in the middle": (
        {"model": "support", "messages": [_user(), {"role": "system", "content": "x"}, _user()]},
        400,
        None,
    ),
    "empty user message": ({"model": "support", "messages": [_user("  ")]}, 400, "messages"),
    "max_tokens over cap": (
        {"model": "support", "messages": [_user()], "max_tokens": 10_000},
        400,
        "max_tokens",
    ),
    "negative max_tokens": (
        {"model": "support", "messages": [_user()], "max_tokens": -1},
        400,
        "max_tokens",
    ),
    "temperature out of range": (
        {"model": "support", "messages": [_user()], "temperature": 7},
        400,
        "temperature",
    ),
    "n > 1": ({"model": "support", "messages": [_user()], "n": 3}, 400, "n"),
    "tools": (
        {"model": "support", "messages": [_user()], "tools": [{"type": "function"}]},
        400,
        None,
    ),
    "too many messages": (
        {"model": "support", "messages": [_user()] * 65},
        400,
        "messages",
    ),
    "message too long": (
        {"model": "support", "messages": [_user("x" * 32_001)]},
        400,
        "messages[0].content",
    ),
    "unknown agent": ({"model": "nobody", "messages": [_user()]}, 404, "model"),
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_bad_chat_request(
    case: str, app_client: TestClient, tenant: TenantKeys, database: Database
) -> None:
    create_agent(app_client, tenant)
    body, status, param = BAD_BODIES[case]
    before = _rollouts(database)
    response = app_client.post("/v1/chat/completions", json=body, headers=tenant.headers())
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"]
    if param is not None:
        assert error["param"] == param
    assert _rollouts(database) == before


def test_malformed_and_oversize_bodies(
    app_client: TestClient, tenant: TenantKeys, database: Database
) -> None:
    create_agent(app_client, tenant)
    before = _rollouts(database)
    h = {**tenant.headers(), "content-type": "application/json"}
    malformed = app_client.post("/v1/chat/completions", content=b'{"model": ', headers=h)
    assert malformed.status_code == 400
    assert malformed.json()["error"]["message"] == "the request body is not valid JSON"

    huge = b'{"model": "support", "messages": [{"role": "user", "content": "' + b"x" * 1_100_000
    oversize = app_client.post("/v1/chat/completions", content=huge + b'"}]}', headers=h)
    assert oversize.status_code == 413
    assert oversize.json()["error"]["code"] == "payload_too_large"

    def chunks() -> Any:
        yield huge
        yield b'"}]}'

    chunked = app_client.post("/v1/chat/completions", content=chunks(), headers=h)
    assert chunked.status_code == 413
    assert _rollouts(database) == before


def test_missing_invalid_and_revoked_keys(
    app_client: TestClient, tenant: TenantKeys, database: Database
) -> None:
    create_agent(app_client, tenant)
    body = {"model": "support", "messages": [_user()], "max_tokens": 4}
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}):
        response = app_client.post("/v1/chat/completions", json=body, headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["error"]["type"] == "authentication_error"

    h = tenant.headers()
    keys = app_client.get("/api/v1/keys", headers=h).json()
    member = next(k for k in keys if k["role"] == "member")
    ok = app_client.post("/v1/chat/completions", json=body, headers=tenant.headers("member"))
    assert ok.status_code == 200
    revoked = app_client.delete(f"/api/v1/keys/{member['id']}", headers=h)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    refused = app_client.post("/v1/chat/completions", json=body, headers=tenant.headers("member"))
    assert refused.status_code == 401
    # A tampered secret with a valid lookup part is refused too.
    lookup = tenant.admin.split("_")[1]
    forged = {"Authorization": f"Bearer fsk_{lookup}_forged"}
    assert app_client.get("/v1/models", headers=forged).status_code == 401
