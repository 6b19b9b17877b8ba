"""Builds an agent with rated answers through the real API, as users would."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from backend.simulation import (
    SUPPORT_QUESTIONS,
    ShortAnswers,
    SimQuestion,
    reward_spec,
    strict_user,
)
from tests.conftest import TenantKeys

QUESTIONS = SUPPORT_QUESTIONS
PREFERENCE = ShortAnswers(limit=12)
USER = strict_user(PREFERENCE)
REWARD = reward_spec(PREFERENCE)


def create_agent(api: str, tenant: TenantKeys, **fast_loop: Any) -> None:
    response = httpx.post(
        f"{api}/api/v1/agents",
        json={
            "slug": "support",
            "system_prompt": "You are a helpful customer support agent.",
            "reward": REWARD,
            "max_tokens_cap": 64,
            "fast_loop": {"min_examples": 4, "budget": 36, "max_tokens": 48, **fast_loop},
        },
        headers=tenant.headers(),
    )
    assert response.status_code == 201, response.text


def ask_all(api: str, tenant: TenantKeys, questions: list[str]) -> list[dict[str, Any]]:
    """Users ask concurrently (the engine batches them); returns the completions."""

    def ask(question: str) -> dict[str, Any]:
        response = httpx.post(
            f"{api}/v1/chat/completions",
            json={
                "model": "support",
                "messages": [{"role": "user", "content": question}],
                "max_tokens": 48,
                "temperature": 0,
            },
            headers=tenant.headers("member"),
            timeout=300,
        )
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        data["question"] = question
        return data

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(ask, questions))


def rate_like_users(api: str, tenant: TenantKeys, completions: list[dict[str, Any]]) -> int:
    """Users who want short answers rate every answer; returns how many were too long."""
    too_long = 0
    for completion in completions:
        answer = completion["choices"][0]["message"]["content"]
        question = SimQuestion(completion["question"], "test")
        too_long += not PREFERENCE.satisfied(question, answer)
        response = httpx.post(
            f"{api}/v1/feedback",
            json=USER.feedback(question, completion["id"], answer),
            headers=tenant.headers("member"),
        )
        assert response.status_code == 201, response.text
    return too_long
