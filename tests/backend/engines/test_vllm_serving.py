"""The platform on the production engine: API processes with FASTSLOW_ENGINE=vllm in front of a
real vLLM server (CPU build), real LoRA adapters with non-zero weights."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from backend.adapters.models import AdapterVersion
from backend.db import Database
from backend.rollouts.models import Rollout
from tests.conftest import Stack, TenantKeys, VllmServer, start_api
from tests.support import make_lora, reference_generate, wait_until

pytestmark = pytest.mark.vllm

QUESTION = "What is the capital of France?"
MAX_TOKENS = 12


@dataclass(frozen=True)
class Apis:
    one: str
    two: str


@pytest.fixture(scope="module")
def apis(stack: Stack, vllm_server: VllmServer) -> Iterator[Apis]:
    env = {
        "FASTSLOW_ENGINE": "vllm",
        "FASTSLOW_ENGINE_URL": vllm_server.url,
        "FASTSLOW_ENGINE_API_KEY": vllm_server.api_key,
        "FASTSLOW_ADAPTER_UNLOAD_GRACE_S": "1",
        "FASTSLOW_ENGINE_RETRY_AFTER_S": "3",
    }
    one, url_one = start_api(stack, "api-vllm-1", **env)
    two, url_two = start_api(stack, "api-vllm-2", **env)
    yield Apis(url_one, url_two)
    one.stop()
    two.stop()


@pytest.fixture(scope="module")
def loras(tmp_path_factory: pytest.TempPathFactory, base_model_dir: Path) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("vllm-loras")
    return {seed: make_lora(base_model_dir, root / str(seed), seed=seed) for seed in (1, 2, 3, 4)}


@pytest.fixture(scope="module")
def expected(base_model_dir: Path, loras: dict[int, Path]) -> dict[int | None, str]:
    """What transformers + peft answer with each adapter (None: the base model)."""
    messages = [{"role": "user", "content": QUESTION}]
    out: dict[int | None, str] = {
        None: reference_generate(base_model_dir, messages, MAX_TOKENS, None)
    }
    for seed, path in loras.items():
        out[seed] = reference_generate(base_model_dir, messages, MAX_TOKENS, path)
    assert len(set(out.values())) == len(out), "every adapter must answer differently"
    return out


def agent(api: str, tenant: TenantKeys, slug: str = "support") -> None:
    httpx.post(
        f"{api}/api/v1/agents", json={"slug": slug, "system_prompt": ""}, headers=tenant.headers()
    ).raise_for_status()


def upload(api: str, tenant: TenantKeys, directory: Path, slug: str = "support") -> int:
    with (
        (directory / "adapter_config.json").open("rb") as c,
        (directory / "adapter_model.safetensors").open("rb") as w,
    ):
        response = httpx.post(
            f"{api}/api/v1/agents/{slug}/adapters",
            files={"config": c, "weights": w},
            headers=tenant.headers(),
        )
    assert response.status_code == 201, response.text
    version: int = response.json()["version"]
    return version


def activate(api: str, tenant: TenantKeys, version: int | None, slug: str = "support") -> Any:
    return httpx.post(
        f"{api}/api/v1/agents/{slug}/adapters/activate",
        json={"version": version, "reason": "test"},
        headers=tenant.headers(),
        timeout=120,
    )


def ask(api: str, tenant: TenantKeys, *, slug: str = "support", stream: bool = False) -> Any:
    body = {
        "model": slug,
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream": stream,
    }
    return httpx.post(
        f"{api}/v1/chat/completions", json=body, headers=tenant.headers("member"), timeout=120
    )


def answer_of(response: Any) -> str:
    if response.headers["content-type"].startswith("text/event-stream"):
        text = ""
        for line in response.text.splitlines():
            if line.startswith("data: {"):
                event = json.loads(line[6:])
                for choice in event.get("choices", []):
                    text += choice["delta"].get("content") or ""
        return text
    content: str = response.json()["choices"][0]["message"]["content"]
    return content


def test_adapter_output_through_the_platform_equals_peft(
    apis: Apis, tenant: TenantKeys, loras: dict[int, Path], expected: dict[int | None, str]
) -> None:
    agent(apis.one, tenant)
    assert answer_of(ask(apis.one, tenant)) == expected[None]
    version = upload(apis.one, tenant, loras[1])
    assert activate(apis.one, tenant, version).status_code == 200
    for stream in (False, True):
        response = ask(apis.one, tenant, stream=stream)
        assert response.headers["x-fastslow-adapter-version"] == str(version)
        assert answer_of(response) == expected[1]


def test_swap_under_load_fails_no_request(
    apis: Apis,
    tenant: TenantKeys,
    loras: dict[int, Path],
    expected: dict[int | None, str],
    database: Database,
) -> None:
    agent(apis.one, tenant)
    v1, v2 = upload(apis.one, tenant, loras[1]), upload(apis.one, tenant, loras[2])
    by_version = {v1: expected[1], v2: expected[2]}
    assert activate(apis.one, tenant, v1).status_code == 200

    results: list[tuple[float, float, int, str, str]] = []
    failures: list[str] = []
    stop = threading.Event()

    def client(n: int) -> None:
        api = apis.one if n % 2 else apis.two  # both replicas serve the same agent
        while not stop.is_set():
            started = time.monotonic()
            try:
                response = ask(api, tenant, stream=bool(n % 3 == 0))
            except httpx.HTTPError as exc:
                failures.append(repr(exc))
                continue
            if response.status_code != 200:
                failures.append(f"{response.status_code} {response.text[:200]}")
                continue
            version = int(response.headers["x-fastslow-adapter-version"])
            completion = response.headers["x-fastslow-completion-id"]
            results.append((started, time.monotonic(), version, answer_of(response), completion))

    def served_since(moment: float, count: int) -> bool:
        return sum(1 for start, *_ in results if start > moment) >= count

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: served_since(0, 6), timeout=120, what="traffic on v1")
        assert activate(apis.one, tenant, v2).status_code == 200
        swapped = time.monotonic()
        wait_until(lambda: served_since(swapped, 6), timeout=120, what="traffic on v2")
        rollback_started = time.monotonic()
        assert activate(apis.two, tenant, v1).status_code == 200, "rollback via the other replica"
        rolled_back = time.monotonic()
        wait_until(lambda: served_since(rolled_back, 6), timeout=120, what="traffic after rollback")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)

    assert failures == [], failures[:5]
    assert len(results) >= 12
    wrong = [(v, a) for _, _, v, a, _ in results if a != by_version[v]]
    assert wrong == [], "every answer is exactly what the version it reports produces"
    during = {v for start, _, v, _, _ in results if swapped < start < rollback_started}
    after = {v for start, _, v, _, _ in results if start > rolled_back}
    assert during == {v2}, "once activation returns, every new request gets the new adapter"
    assert after == {v1}
    with database.session() as session:
        rows = session.execute(
            select(Rollout.id, Rollout.adapter_version_id).where(
                Rollout.id.in_([c for *_, c in results])
            )
        ).all()
    assert len(rows) == len(results), "every request left its rollout"
    ids = {r.adapter_version_id for r in rows}
    assert len(ids) == 2


def test_replicas_agree_on_an_activation_at_once(
    apis: Apis, tenant: TenantKeys, loras: dict[int, Path]
) -> None:
    agent(apis.one, tenant)
    version = upload(apis.one, tenant, loras[3])
    assert activate(apis.one, tenant, version).status_code == 200
    done = time.monotonic()
    response = ask(apis.two, tenant)
    assert response.headers["x-fastslow-adapter-version"] == str(version)
    assert time.monotonic() - done < 1 + response.elapsed.total_seconds()
    off = activate(apis.two, tenant, None)
    assert off.status_code == 200
    assert ask(apis.one, tenant).headers["x-fastslow-adapter-version"] == "none"


def test_more_live_adapters_than_engine_slots(
    apis: Apis,
    new_tenant: Any,
    loras: dict[int, Path],
    expected: dict[int | None, str],
) -> None:
    """The test server has 2 adapter slots and a CPU cache of 3; four agents each serve their
    own adapter, in turns, and every answer is still its own adapter's."""
    tenants = {seed: new_tenant() for seed in loras}
    for seed, tenant in tenants.items():
        agent(apis.one, tenant)
        assert activate(apis.one, tenant, upload(apis.one, tenant, loras[seed])).status_code == 200
    for _ in range(2):
        for seed, tenant in tenants.items():
            assert answer_of(ask(apis.two, tenant)) == expected[seed]


def test_broken_adapter_fails_cleanly_and_the_old_one_keeps_serving(
    apis: Apis,
    tenant: TenantKeys,
    loras: dict[int, Path],
    expected: dict[int | None, str],
    database: Database,
) -> None:
    agent(apis.one, tenant)
    good = upload(apis.one, tenant, loras[1])
    assert activate(apis.one, tenant, good).status_code == 200
    bad = upload(apis.one, tenant, loras[2])
    # The stored file gets corrupted (a bad disk, a bad sync) after it was accepted.
    with database.session() as session:
        stored = session.scalars(
            select(AdapterVersion).where(
                AdapterVersion.tenant_id == tenant.tenant_id, AdapterVersion.version == bad
            )
        ).one()
    (Path(stored.path) / "adapter_model.safetensors").write_bytes(b"\x00" * 4096)
    refused = activate(apis.one, tenant, bad)
    assert refused.status_code == 422, refused.text
    detail = httpx.get(
        f"{apis.one}/api/v1/agents/support/adapters/{bad}", headers=tenant.headers()
    ).json()
    assert detail["status"] == "failed" and detail["status_reason"]
    response = ask(apis.two, tenant)
    assert response.headers["x-fastslow-adapter-version"] == str(good)
    assert answer_of(response) == expected[1]


def test_engine_restart_answers_503_then_recovers_the_live_adapter(
    apis: Apis,
    tenant: TenantKeys,
    loras: dict[int, Path],
    expected: dict[int | None, str],
    vllm_server: VllmServer,
    database: Database,
) -> None:
    agent(apis.one, tenant)
    version = upload(apis.one, tenant, loras[4])
    assert activate(apis.one, tenant, version).status_code == 200
    assert answer_of(ask(apis.one, tenant)) == expected[4]
    with database.session() as session:
        before = session.scalar(select(func.count()).select_from(Rollout))

    vllm_server.kill()
    try:
        for stream in (False, True):
            down = ask(apis.one, tenant, stream=stream)
            assert down.status_code == 503, down.text
            assert down.headers["retry-after"] == "3"
            assert "unavailable" in down.json()["error"]["message"]
        assert httpx.get(f"{apis.two}/readyz").json()["checks"]["engine"].startswith("down")
        with database.session() as session:
            assert session.scalar(select(func.count()).select_from(Rollout)) == before
    finally:
        vllm_server.start()  # later tests share this server

    wait_until(lambda: httpx.get(f"{apis.one}/readyz").status_code == 200, timeout=60)
    # The restarted engine has never heard of the adapter: it is loaded on first use.
    for api in (apis.one, apis.two):
        response = ask(api, tenant)
        assert response.status_code == 200
        assert response.headers["x-fastslow-adapter-version"] == str(version)
        assert answer_of(response) == expected[4]
    assert uuid.UUID(str(tenant.tenant_id))
