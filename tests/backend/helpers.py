from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import TenantKeys


def create_agent(
    client: TestClient, tenant: TenantKeys, slug: str = "support", **fields: Any
) -> dict[str, Any]:
    body = {"slug": slug, "system_prompt": "You are a concise support agent.", **fields}
    response = client.post("/api/v1/agents", json=body, headers=tenant.headers())
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


def chat(
    client: TestClient,
    tenant: TenantKeys,
    content: str,
    *,
    model: str = "support",
    role: str = "member",
    **params: Any,
) -> Any:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 12,
        "temperature": 0,
        **params,
    }
    return client.post("/v1/chat/completions", json=body, headers=tenant.headers(role))


def sse_events(text: str) -> list[Any]:
    events = []
    for line in text.splitlines():
        if line.startswith("data: "):
            payload = line[len("data: ") :]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events
