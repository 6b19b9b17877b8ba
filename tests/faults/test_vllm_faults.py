"""The vLLM server dies and comes back while simulated users of two tenants keep chatting
(streamed and not) and rating: clients see 503 with `Retry-After` (or, on a stream already
under way, the error in-band) and never a 500; every answer a client received is stored; the
adapter that was live serves again after the restart with nobody loading it by hand.

(The same restart without traffic: tests/backend/engines/test_vllm_serving.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from backend.simulation.traffic import Traffic, activate_adapter, create_tenants, upload_adapter
from tests.conftest import PLATFORM_KEY, Stack, VllmServer, start_api
from tests.faults.support import Background, assert_nothing_lost, describe
from tests.support import make_lora, wait_until

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

RETRY_AFTER_S = 2


def ask(base: str, key: str) -> httpx.Response:
    return httpx.post(
        f"{base}/v1/chat/completions",
        json={
            "model": "support",
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 12,
            "temperature": 0,
        },
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
    )


def test_vllm_restart_during_traffic(
    stack: Stack, vllm_server: VllmServer, base_model_dir: Path, tmp_path: Path
) -> None:
    api, base = start_api(
        stack,
        "api-vllm-restart",
        FASTSLOW_ENGINE="vllm",
        FASTSLOW_ENGINE_URL=vllm_server.url,
        FASTSLOW_ENGINE_API_KEY=vllm_server.api_key,
        FASTSLOW_ENGINE_RETRY_AFTER_S=str(RETRY_AFTER_S),
        FASTSLOW_ADAPTER_UNLOAD_GRACE_S="1",
    )
    try:
        tenants = create_tenants(base, PLATFORM_KEY, 2, max_tokens=16)
        adapted = tenants[0]
        lora = make_lora(base_model_dir, tmp_path / "lora", seed=5)
        version = upload_adapter(base, adapted, lora)
        activated = activate_adapter(base, adapted, version)
        assert activated.status_code == 200, activated.text
        before = ask(base, adapted.member_key)
        assert before.headers["x-fastslow-adapter-version"] == str(version)

        traffic = Traffic(base, tenants, users_per_tenant=3, max_tokens=8, think_s=0.1)
        with Background(traffic, limit_s=900) as clients:
            wait_until(lambda: clients.ok_since(0) >= 10, timeout=120, what="traffic to flow")
            down_at = clients.now()
            vllm_server.kill()
            wait_until(
                lambda: any(c.status == 503 for c in list(traffic.report.calls)),
                timeout=30,
                what="clients to see the outage",
            )
            vllm_server.start()  # later tests share this server
            up_at = clients.now()
            wait_until(lambda: clients.ok_since(up_at) >= 10, timeout=120, what="recovery")
        after = ask(base, adapted.member_key)
        assert api.alive
    finally:
        api.stop()

    report = traffic.report
    unexpected = report.unexpected(faults=True)
    assert not unexpected, describe(unexpected)
    refused = [c for c in report.calls if c.status == 503]
    assert refused and all(c.retry_after == str(RETRY_AFTER_S) for c in refused)
    assert all(c.started_s + c.latency_s >= down_at for c in refused)
    assert_nothing_lost(stack.settings.database_url, report)
    # The live adapter is back (loaded on first use by the restarted engine): same greedy
    # answer as before the restart, from the same adapter version.
    assert after.status_code == 200, after.text
    assert after.headers["x-fastslow-adapter-version"] == str(version)
    assert _answer(after) == _answer(before)
    print(f"vLLM restart (down {up_at - down_at:.0f}s):", report.summary())


def _answer(response: httpx.Response) -> Any:
    return response.json()["choices"][0]["message"]["content"]
