"""Builds an agent with rated answers through the real API, as users would."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tests.conftest import TenantKeys

QUESTIONS = [
    "Where is my order #10001?",
    "Can I return my shoes?",
    "Do you ship to Norway?",
    "How do I reset my password?",
    "My package arrived damaged, what now?",
    "Is there a discount for students?",
    "How long does a refund take?",
    "Can I pay with PayPal?",
    "Do you have gift cards?",
    "Why was my card declined?",
    "Can I change my delivery address?",
    "Where is my order #10002?",
]
WORD_LIMIT = 12


def create_agent(api: str, tenant: TenantKeys, **fast_loop: Any) -> None:
    response = httpx.post(
        f"{api}/api/v1/agents",
        json={
            "slug": "support",
            "system_prompt": "You are a helpful customer support agent.",
            "reward": {
                "checks": [{"type": "max_words", "limit": WORD_LIMIT}],
                "correction_weight": 0,
            },
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
        return data

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(ask, questions))


def rate_like_users(api: str, tenant: TenantKeys, completions: list[dict[str, Any]]) -> int:
    """Users who want short answers: thumbs down, "too long" and a short correction for long
    answers; thumbs up otherwise. Returns how many answers were too long."""
    too_long = 0
    for completion in completions:
        answer = completion["choices"][0]["message"]["content"]
        words = answer.split()
        body: dict[str, Any] = {"completion_id": completion["id"], "score": 1}
        if len(words) > WORD_LIMIT:
            too_long += 1
            short = " ".join(answer.split(".")[0].split()[:10]).rstrip(",;:") + "."
            body = {**body, "score": -1, "comment": "too long", "correction": short}
        response = httpx.post(f"{api}/v1/feedback", json=body, headers=tenant.headers("member"))
        assert response.status_code == 201, response.text
    return too_long
