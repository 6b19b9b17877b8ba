"""Bad requests to the serving path: a clear 4xx in the OpenAI error shape, nothing stored."""

from __future__ import annotations

import re
import socket
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from backend.agents.models import Agent
from backend.db import Database
from backend.prompts.models import PromptVersion
from backend.rollouts.models import Feedback, Rollout
from backend.tenants.models import ApiKey
from tests.backend.helpers import create_agent
from tests.conftest import PLATFORM_KEY, Stack, TenantKeys, start_api
from tests.support import free_port


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


UPLOAD = "/api/v1/agents/support/adapters"
FORTY_MB = 40 * 1024 * 1024


def _upload_head(port: int, authorization: str | None) -> bytes:
    """Send an adapter upload's head and its first 64 KiB of a declared 40 MB body; return
    what the server answers within 10 s (nothing: it is waiting for the rest)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        head = [
            f"POST {UPLOAD} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Content-Type: multipart/form-data; boundary=x",
            f"Content-Length: {FORTY_MB}",
        ]
        if authorization is not None:
            head.append(f"Authorization: {authorization}")
        conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + b"\0" * 65536)
        answer = b""
        try:
            while chunk := conn.recv(65536):
                answer += chunk
                head_end = answer.find(b"\r\n\r\n")
                length = re.search(rb"content-length: (\d+)", answer[:head_end], re.I)
                if length and len(answer) - head_end - 4 >= int(length[1]):
                    break
        except TimeoutError:
            pass
        return answer


def test_upload_without_an_admin_key_is_refused_before_its_body_is_read(
    stack: Stack, tenant: TenantKeys
) -> None:
    """A real `fastslow api`: an upload without a valid key is a 401, with a member's or the
    platform key a 403, at once, while the client is still sending its 40 MB (before, the
    whole body was read, then refused)."""
    api, url = start_api(
        stack,
        "api-upload-auth",
        FASTSLOW_ENGINE="vllm",  # no engine is called here; nothing to load
        FASTSLOW_ENGINE_URL=f"http://127.0.0.1:{free_port()}",
    )
    port = int(url.rsplit(":", 1)[1])
    refusals = {
        None: (401, b"invalid_api_key"),
        "Bearer fsk_nope_nope": (401, b"invalid_api_key"),
        "Basic dXNlcjpwYXNz": (401, b"invalid_api_key"),
        f"Bearer {tenant.member}": (403, b"forbidden"),
        f"Bearer {PLATFORM_KEY}": (403, b"forbidden"),
    }
    try:
        for authorization, (status, code) in refusals.items():
            answer = _upload_head(port, authorization)
            assert answer.startswith(f"HTTP/1.1 {status}".encode()), (authorization, answer[:300])
            assert code in answer, answer
    finally:
        api.stop()


def test_only_admin_keys_get_the_upload_limit(app_client: TestClient, tenant: TenantKeys) -> None:
    """The same refusals as the route's own, whatever the size; an admin's upload over the
    ordinary body limit is read (and then judged as an adapter, not as too large)."""
    create_agent(app_client, tenant)
    big = {"weights": ("adapter_model.safetensors", b"\0" * 2_000_000)}
    config = {"config": ("adapter_config.json", b"{}")}
    for headers in (tenant.headers("member"), {"Authorization": f"Bearer {PLATFORM_KEY}"}):
        for files in ({**config, **big}, config):
            refused = app_client.post(UPLOAD, files=files, headers=headers)
            assert refused.status_code == 403, refused.text
    admin = app_client.post(UPLOAD, files={**config, **big}, headers=tenant.headers())
    assert admin.status_code == 422, admin.text


NUL = "\u0000"


def _stored(database: Database) -> list[int]:
    with database.session() as session:
        return [
            int(session.scalar(select(func.count()).select_from(table)) or 0)
            for table in (Rollout, Feedback, ApiKey, Agent, PromptVersion)
        ]


# Every kind of stored text, with a NUL in it: the request is refused naming the field (422 on
# /api, 400 on /v1 as OpenAI answers), never a 500, and nothing is stored.
NUL_REQUESTS: dict[str, tuple[str, str, dict[str, Any], str]] = {
    "chat message": (
        "POST",
        "/v1/chat/completions",
        {"model": "support", "messages": [_user(f"Hi{NUL}")], "max_tokens": 4},
        "messages[0].content",
    ),
    "feedback comment": (
        "POST",
        "/v1/feedback",
        {"completion_id": "{completion}", "score": 1, "comment": f"ok{NUL}"},
        "comment",
    ),
    "feedback correction": (
        "POST",
        "/v1/feedback",
        {"completion_id": "{completion}", "score": -1, "correction": f"Yes.{NUL}"},
        "correction",
    ),
    "agent system prompt": (
        "POST",
        "/api/v1/agents",
        {"slug": "nul-prompt", "system_prompt": f"Be brief.{NUL}"},
        "system_prompt",
    ),
    "agent demonstration": (
        "POST",
        "/api/v1/agents",
        {
            "slug": "nul-demo",
            "system_prompt": "Be brief.",
            "demonstrations": [_user("Hi"), {"role": "assistant", "content": f"Hello{NUL}"}],
        },
        "demonstrations[1].content",
    ),
    "agent reward text": (
        "PATCH",
        "/api/v1/agents/support",
        {"reward": {"checks": [{"type": "starts_with", "text": f"Sure{NUL}"}]}},
        "reward.checks[0].text",
    ),
    "agent description": (
        "PATCH",
        "/api/v1/agents/support",
        {"description": f"desk{NUL}"},
        "description",
    ),
    "prompt note": (
        "POST",
        "/api/v1/agents/support/prompts",
        {"instructions": "Be brief.", "note": f"edit{NUL}"},
        "note",
    ),
    "key name": ("POST", "/api/v1/keys", {"name": f"ci{NUL}"}, "name"),
    "query parameter": ("GET", "/api/v1/jobs?kind=optimize%00", {}, "kind"),
    "path parameter": ("GET", "/api/v1/agents/support%00", {}, "slug"),
}


@pytest.mark.parametrize("case", sorted(NUL_REQUESTS))
def test_nul_characters_are_refused_in_every_stored_text(
    case: str, app_client: TestClient, tenant: TenantKeys, database: Database
) -> None:
    create_agent(app_client, tenant)
    completion = app_client.post(
        "/v1/chat/completions",
        json={"model": "support", "messages": [_user()], "max_tokens": 2},
        headers=tenant.headers(),
    ).json()["id"]
    method, path, body, param = NUL_REQUESTS[case]
    body = {k: (completion if v == "{completion}" else v) for k, v in body.items()}
    before = _stored(database)
    response = app_client.request(method, path, json=body or None, headers=tenant.headers())
    openai = path.startswith("/v1/")
    assert response.status_code == (400 if openai else 422), response.text
    error = response.json()["error"] if openai else response.json()
    assert error["param"] == param, error
    message = error["message"] if openai else error["detail"]
    assert param in message and "NUL" in message, message
    assert _stored(database) == before, "nothing was stored"


def test_nul_in_an_upload_form_field_is_refused(app_client: TestClient, tenant: TenantKeys) -> None:
    create_agent(app_client, tenant)
    response = app_client.post(
        "/api/v1/agents/support/adapters",
        files={
            "config": ("adapter_config.json", b"{}"),
            "weights": ("adapter_model.safetensors", b"\0" * 16),
        },
        data={"note": f"v1{NUL}"},
        headers=tenant.headers(),
    )
    assert response.status_code == 422, response.text
    assert response.json()["param"] == "note"
