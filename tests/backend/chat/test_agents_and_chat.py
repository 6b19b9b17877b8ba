"""Agents and the serving path, in-process against the real database and the real model."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from backend.app import create_app
from backend.config import Settings
from backend.db import Database
from backend.engines import EngineError, GenerationRequest, SamplingParams, StreamChunk
from backend.engines.local import LocalEngine
from backend.prompts.context import Context
from backend.rollouts.models import Rollout
from tests.backend.helpers import chat, create_agent, sse_events
from tests.conftest import TenantKeys

DEMOS = [
    {"role": "user", "content": "Where is my parcel?"},
    {"role": "assistant", "content": "Certainly: it ships tomorrow."},
]


def test_create_list_get_update_agent(app_client: TestClient, tenant: TenantKeys) -> None:
    created = create_agent(
        app_client,
        tenant,
        demonstrations=DEMOS,
        reward={"checks": [{"type": "starts_with", "text": "Certainly:"}]},
        max_tokens_cap=32,
    )
    assert created["live_prompt_version"] == 1
    assert created["live_adapter_version"] is None
    assert created["max_tokens_cap"] == 32
    assert created["reward"]["checks"][0]["text"] == "Certainly:"

    listed = app_client.get("/api/v1/agents", headers=tenant.headers("member")).json()
    assert [a["slug"] for a in listed] == ["support"]
    got = app_client.get("/api/v1/agents/support", headers=tenant.headers()).json()
    assert got["id"] == created["id"]

    patched = app_client.patch(
        "/api/v1/agents/support", json={"max_tokens_cap": 48}, headers=tenant.headers()
    )
    assert patched.status_code == 200
    assert patched.json()["max_tokens_cap"] == 48
    assert patched.json()["reward"] == created["reward"]  # untouched fields stay


def test_agent_validation(app_client: TestClient, tenant: TenantKeys) -> None:
    create_agent(app_client, tenant)
    h = tenant.headers()
    cases = {
        "duplicate slug": ({"slug": "support", "system_prompt": "x"}, 409),
        "bad slug": ({"slug": "Not A Slug!", "system_prompt": "x"}, 422),
        "unknown base model": (
            {"slug": "a2", "system_prompt": "x", "base_model": "gpt-17"},
            422,
        ),
        "unknown check": (
            {"slug": "a3", "system_prompt": "x", "reward": {"checks": [{"type": "vibes"}]}},
            422,
        ),
        "bad regex": (
            {
                "slug": "a4",
                "system_prompt": "x",
                "reward": {"checks": [{"type": "regex", "pattern": "("}]},
            },
            422,
        ),
        "odd demonstrations": (
            {"slug": "a5", "system_prompt": "x", "demonstrations": DEMOS[:1]},
            422,
        ),
        "unknown field": ({"slug": "a6", "system_prompt": "x", "temperature": 3}, 422),
    }
    for name, (body, status) in cases.items():
        response = app_client.post("/api/v1/agents", json=body, headers=h)
        assert response.status_code == status, (name, response.text)
        assert "detail" in response.json(), name
    slugs = [a["slug"] for a in app_client.get("/api/v1/agents", headers=h).json()]
    assert slugs == ["support"], "a refused request stored nothing"


def test_chat_applies_live_context_and_records_rollout(
    app_client: TestClient, tenant: TenantKeys, local_engine: LocalEngine, database: Database
) -> None:
    create_agent(app_client, tenant, demonstrations=DEMOS)
    response = chat(app_client, tenant, "Can I change my delivery address?")
    assert response.status_code == 200, response.text
    assert response.headers["x-fastslow-prompt-version"] == "1"
    assert response.headers["x-fastslow-adapter-version"] == "none"
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "support"
    answer = body["choices"][0]["message"]["content"]
    assert body["usage"]["completion_tokens"] > 0

    # The answer is exactly what the engine gives for instructions + demo turns + question.
    messages = Context("You are a concise support agent.", DEMOS).messages(  # type: ignore[arg-type]
        [{"role": "user", "content": "Can I change my delivery address?"}],
    )
    assert messages[1:3] == DEMOS, "demonstrations are sent as real turns"
    expected = asyncio.run(
        local_engine.generate(
            GenerationRequest(messages, SamplingParams(max_tokens=12, temperature=0))
        )
    )
    assert answer == expected.text

    with database.session() as session:
        rollout = session.get(Rollout, body["id"])
        assert rollout is not None
        assert rollout.completion == answer
        assert rollout.messages == [
            {"role": "user", "content": "Can I change my delivery address?"}
        ]
        assert rollout.prompt_version_id is not None
        assert rollout.adapter_version_id is None
        assert rollout.finish_reason == body["choices"][0]["finish_reason"]
        assert rollout.sampling["max_tokens"] == 12
        assert rollout.prompt_tokens == body["usage"]["prompt_tokens"]
        assert not rollout.stream


def test_streaming_matches_non_streaming(
    app_client: TestClient, tenant: TenantKeys, database: Database
) -> None:
    create_agent(app_client, tenant)
    plain = chat(app_client, tenant, "How do I reset my password?").json()
    with app_client.stream(
        "POST",
        "/v1/chat/completions",
        json={
            "model": "support",
            "messages": [{"role": "user", "content": "How do I reset my password?"}],
            "max_tokens": 12,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        headers=tenant.headers("member"),
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-fastslow-prompt-version"] == "1"
        events = sse_events(response.read().decode())
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == plain["choices"][0]["message"]["content"]
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finish[-1] in ("stop", "length")
    assert chunks[-1]["usage"]["completion_tokens"] > 0
    completion_id = chunks[0]["id"]
    assert all(c["id"] == completion_id for c in chunks)
    with database.session() as session:
        rollout = session.get(Rollout, completion_id)
        assert rollout is not None and rollout.stream and rollout.completion == text


def test_prompt_versions_switch_what_serves(
    app_client: TestClient, tenant: TenantKeys, database: Database
) -> None:
    create_agent(app_client, tenant)
    h = tenant.headers()
    v2 = app_client.post(
        "/api/v1/agents/support/prompts",
        json={"instructions": "Always answer in French.", "note": "french"},
        headers=h,
    )
    assert v2.status_code == 201, v2.text
    assert v2.json()["version"] == 2 and v2.json()["live"]
    served = chat(app_client, tenant, "Hello")
    assert served.headers["x-fastslow-prompt-version"] == "2"

    back = app_client.post(
        "/api/v1/agents/support/prompts/1/activate", json={"reason": "rollback"}, headers=h
    )
    assert back.status_code == 200 and back.json()["live"]
    served = chat(app_client, tenant, "Hello")
    assert served.headers["x-fastslow-prompt-version"] == "1"
    with database.session() as session:
        rollout = session.get(Rollout, served.json()["id"])
        assert rollout is not None
    versions = app_client.get("/api/v1/agents/support/prompts", headers=h).json()
    assert [(v["version"], v["live"]) for v in versions] == [(2, False), (1, True)]
    history = app_client.get("/api/v1/agents/support/activations", headers=h).json()
    assert [(a["kind"], a["from_version"], a["to_version"], a["reason"]) for a in history] == [
        ("prompt", 2, 1, "rollback"),
        ("prompt", 1, 2, "french"),
        ("prompt", None, 1, "agent created"),
    ]
    missing = app_client.post("/api/v1/agents/support/prompts/9/activate", json={}, headers=h)
    assert missing.status_code == 404


def test_models_lists_only_own_agents(
    app_client: TestClient, tenant: TenantKeys, other_tenant: TenantKeys
) -> None:
    create_agent(app_client, tenant, slug="alpha")
    create_agent(app_client, other_tenant, slug="beta")
    mine = app_client.get("/v1/models", headers=tenant.headers("member")).json()
    assert [m["id"] for m in mine["data"]] == ["alpha"]
    # Same slug in two tenants is fine: slugs are per tenant.
    create_agent(app_client, other_tenant, slug="alpha")


def test_max_tokens_cap_and_stop(
    app_client: TestClient, tenant: TenantKeys, database: Database
) -> None:
    create_agent(app_client, tenant, max_tokens_cap=16)
    with database.session() as session:
        before = session.scalar(select(func.count()).select_from(Rollout))
    over = chat(app_client, tenant, "Hi", max_tokens=17)
    assert over.status_code == 400
    assert over.json()["error"]["param"] == "max_tokens"
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(Rollout)) == before

    full = chat(app_client, tenant, "Count from one to ten in words.", max_tokens=16).json()
    text = full["choices"][0]["message"]["content"]
    assert len(text) > 3
    stop = text[2:4]
    cut = chat(
        app_client, tenant, "Count from one to ten in words.", max_tokens=16, stop=[stop]
    ).json()
    assert cut["choices"][0]["message"]["content"] == text[: text.index(stop)]
    assert cut["choices"][0]["finish_reason"] == "stop"


def test_unknown_agent_is_404_in_openai_shape(app_client: TestClient, tenant: TenantKeys) -> None:
    response = chat(app_client, tenant, "Hi", model=f"nope-{uuid.uuid4().hex[:6]}")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["type"] == "not_found_error" and "not found" in error["message"]


class FailingStream:
    """The real local engine, whose stream fails after `pieces` text pieces (an engine that
    dies mid-answer); `pieces=0` fails before any text."""

    def __init__(self, engine: LocalEngine, pieces: int) -> None:
        self.engine, self.pieces = engine, pieces

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[StreamChunk, None]:
        sent = 0
        async with contextlib.aclosing(self.engine.stream(request)) as chunks:
            async for chunk in chunks:
                if sent == self.pieces:
                    raise EngineError("the engine died mid-answer")
                if chunk.text:
                    sent += 1
                yield chunk


def test_a_turn_cut_short_by_the_engine_is_recorded_once_with_what_it_said(
    settings: Settings, local_engine: LocalEngine, tenant: TenantKeys, database: Database
) -> None:
    def rollouts() -> list[Rollout]:
        with database.session() as session:
            query = select(Rollout).where(Rollout.tenant_id == tenant.tenant_id)
            return list(session.scalars(query))

    long: dict[str, Any] = {"max_tokens": 40, "stream": True}
    with TestClient(create_app(settings, engine=FailingStream(local_engine, 3))) as client:
        create_agent(client, tenant)
        response = chat(client, tenant, "Tell me about shipping to Norway.", **long)
        assert response.status_code == 200
        events = sse_events(response.text)
        said = "".join(
            e["choices"][0]["delta"].get("content", "") for e in events[:-1] if "choices" in e
        )
        assert "engine failed" in events[-2]["error"]["message"] and events[-1] == "[DONE]"
    (cut,) = rollouts()
    assert (cut.finish_reason, cut.completion) == ("error", said)
    assert said and cut.completion_tokens == 3

    with TestClient(create_app(settings, engine=FailingStream(local_engine, 0))) as client:
        refused = chat(client, tenant, "Tell me about shipping to Norway.", **long)
        assert refused.status_code == 502, refused.text
    assert len(rollouts()) == 1, "no answer, no rollout"
