"""The foundation scenario from the README, against real processes: the `fastslow` CLI, a real
API server, the official `openai` client, and the database the server writes to."""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import httpx
import pytest
from openai import NotFoundError, OpenAI
from sqlalchemy import select

from backend.db import Database
from backend.rollouts.models import Feedback, Rollout
from tests.conftest import Stack
from tests.support import VENV_BIN, wait_until


def fastslow(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "fastslow"), *args],
        env={**__import__("os").environ, **stack.env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_readme_scenario(stack: Stack, api_server: str, database: Database) -> None:
    name = f"acme-{uuid.uuid4().hex[:6]}"
    created = fastslow(stack, "tenant", "create", name)
    assert created.returncode == 0, created.stderr
    tenant = json.loads(created.stdout)
    assert set(tenant) == {"tenant_id", "name", "admin_key"}
    key = tenant["admin_key"]
    again = fastslow(stack, "tenant", "create", name)
    assert again.returncode == 1 and "already exists" in again.stderr

    headers = {"Authorization": f"Bearer {key}"}
    agent = httpx.post(
        f"{api_server}/api/v1/agents",
        json={
            "slug": "support",
            "system_prompt": "You are a helpful support agent for an online shop.",
            "reward": {"checks": [{"type": "max_words", "limit": 40}]},
        },
        headers=headers,
    )
    assert agent.status_code == 201, agent.text

    client = OpenAI(base_url=f"{api_server}/v1", api_key=key, timeout=120)
    assert [m.id for m in client.models.list()] == ["support"]

    raw = client.chat.completions.with_raw_response.create(
        model="support",
        messages=[{"role": "user", "content": "Where is my order #12345?"}],
        max_tokens=16,
        temperature=0,
    )
    assert raw.headers["x-fastslow-prompt-version"] == "1"
    assert raw.headers["x-fastslow-adapter-version"] == "none"
    completion = raw.parse()
    answer = completion.choices[0].message.content
    assert answer
    assert completion.usage is not None and completion.usage.completion_tokens > 0

    stream = client.chat.completions.create(
        model="support",
        messages=[{"role": "user", "content": "Where is my order #12345?"}],
        max_tokens=16,
        temperature=0,
        stream=True,
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(pieces) == answer, "greedy streaming equals the non-streamed answer"

    with pytest.raises(NotFoundError):
        client.chat.completions.create(
            model="nobody", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
        )

    rated = httpx.post(
        f"{api_server}/v1/feedback",
        json={
            "completion_id": completion.id,
            "score": -1,
            "comment": "too vague",
            "correction": "Order #12345 ships today.",
        },
        headers={**headers, "Idempotency-Key": "e2e-1"},
    )
    assert rated.status_code == 201, rated.text

    outsider = json.loads(
        fastslow(stack, "tenant", "create", f"other-{uuid.uuid4().hex[:6]}").stdout
    )
    foreign = httpx.post(
        f"{api_server}/v1/feedback",
        json={"completion_id": completion.id, "score": 1},
        headers={"Authorization": f"Bearer {outsider['admin_key']}"},
    )
    assert foreign.status_code == 404

    member = fastslow(
        stack, "key", "create", "--tenant-id", tenant["tenant_id"], "--role", "member"
    )
    assert member.returncode == 0, member.stderr
    member_key = json.loads(member.stdout)["key"]
    member_client = OpenAI(base_url=f"{api_server}/v1", api_key=member_key, timeout=120)
    assert (
        member_client.chat.completions.create(
            model="support", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
        )
        .choices[0]
        .message.content
        is not None
    )
    refused = httpx.post(
        f"{api_server}/api/v1/agents",
        json={"slug": "x", "system_prompt": ""},
        headers={"Authorization": f"Bearer {member_key}"},
    )
    assert refused.status_code == 403

    with database.session() as session:
        stored = session.get(Rollout, completion.id)
        assert stored is not None and stored.completion == answer
        streamed = session.scalars(
            select(Rollout).where(Rollout.agent_id == stored.agent_id, Rollout.stream)
        ).all()
        assert [r.completion for r in streamed] == [answer]
        feedback = session.scalars(
            select(Feedback).where(Feedback.rollout_id == completion.id)
        ).all()
        assert [(f.score, f.comment) for f in feedback] == [(-1.0, "too vague")]


def test_client_that_disconnects_leaves_a_cut_rollout(
    stack: Stack, api_server: str, database: Database
) -> None:
    tenant = json.loads(fastslow(stack, "tenant", "create", f"cut-{uuid.uuid4().hex[:6]}").stdout)
    headers = {"Authorization": f"Bearer {tenant['admin_key']}"}
    httpx.post(
        f"{api_server}/api/v1/agents",
        json={
            "slug": "talker",
            "system_prompt": "Write long, detailed answers.",
            "max_tokens_cap": 400,
        },
        headers=headers,
    ).raise_for_status()
    body = {
        "model": "talker",
        "messages": [{"role": "user", "content": "Tell me a long story about a lighthouse."}],
        "max_tokens": 400,
        "stream": True,
    }
    with httpx.stream(
        "POST", f"{api_server}/v1/chat/completions", json=body, headers=headers, timeout=60
    ) as response:
        completion_id = response.headers["x-fastslow-completion-id"]
        received = 0
        for line in response.iter_lines():
            if '"content"' in line:
                received += 1
            if received >= 3:
                break  # hang up mid-answer

    def cut_recorded() -> bool:
        with database.session() as session:
            rollout = session.get(Rollout, completion_id)
            return rollout is not None

    wait_until(cut_recorded, timeout=30, what="the cut rollout")
    with database.session() as session:
        rollout = session.get(Rollout, completion_id)
        assert rollout is not None
        assert rollout.finish_reason == "cancelled"
        assert rollout.completion, "what was produced before the cut is kept"
    # The engine stopped: a new request is answered promptly, not after 400 tokens.
    started = time.monotonic()
    quick = httpx.post(
        f"{api_server}/v1/chat/completions",
        json={**body, "stream": False, "max_tokens": 2},
        headers=headers,
        timeout=60,
    )
    assert quick.status_code == 200
    assert time.monotonic() - started < 15


def test_readiness_reports_dependencies(api_server: str) -> None:
    ready = httpx.get(f"{api_server}/readyz", timeout=30)
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok", "engine": "ok"}
