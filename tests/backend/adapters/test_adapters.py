"""Adapter versions on the local engine: upload, activate (load + probe), serve, roll back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from backend.adapters.models import AdapterVersion
from backend.config import Settings
from backend.db import Database
from backend.rollouts.models import Rollout
from tests.backend.helpers import chat, create_agent
from tests.conftest import TenantKeys
from tests.support import make_lora, reference_generate

QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory: pytest.TempPathFactory, base_model_dir: Path) -> Path:
    return make_lora(base_model_dir, tmp_path_factory.mktemp("lora"), seed=1)


def upload(
    client: TestClient, tenant: TenantKeys, directory: Path, *, slug: str = "support"
) -> Any:
    with (
        (directory / "adapter_config.json").open("rb") as config,
        (directory / "adapter_model.safetensors").open("rb") as weights,
    ):
        return client.post(
            f"/api/v1/agents/{slug}/adapters",
            files={"config": config, "weights": weights},
            data={"note": "trained elsewhere"},
            headers=tenant.headers(),
        )


def activate(client: TestClient, tenant: TenantKeys, version: int | None) -> Any:
    return client.post(
        "/api/v1/agents/support/adapters/activate",
        json={"version": version, "reason": "test"},
        headers=tenant.headers(),
    )


def test_adapter_serves_exactly_what_peft_computes(
    app_client: TestClient,
    tenant: TenantKeys,
    lora_dir: Path,
    base_model_dir: Path,
    database: Database,
) -> None:
    create_agent(app_client, tenant, system_prompt="")
    base_answer = chat(app_client, tenant, QUESTION, max_tokens=16).json()
    uploaded = upload(app_client, tenant, lora_dir)
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json()["version"] == 1 and not uploaded.json()["live"]
    assert uploaded.json()["config"]["r"] == 8

    activated = activate(app_client, tenant, 1)
    assert activated.status_code == 200, activated.text
    assert activated.json()["live"]
    response = chat(app_client, tenant, QUESTION, max_tokens=16)
    assert response.headers["x-fastslow-adapter-version"] == "1"
    answer = response.json()["choices"][0]["message"]["content"]

    reference = reference_generate(
        base_model_dir, [{"role": "user", "content": QUESTION}], 16, lora_dir
    )
    assert answer == reference
    assert answer != base_answer["choices"][0]["message"]["content"], "the adapter changes output"
    with database.session() as session:
        rollout = session.get(Rollout, response.json()["id"])
        assert rollout is not None and rollout.adapter_version_id is not None

    off = activate(app_client, tenant, None)
    assert off.status_code == 200 and off.json() is None
    after = chat(app_client, tenant, QUESTION, max_tokens=16)
    assert after.headers["x-fastslow-adapter-version"] == "none"
    assert (
        after.json()["choices"][0]["message"]["content"]
        == (base_answer["choices"][0]["message"]["content"])
    )
    history = app_client.get("/api/v1/agents/support/activations", headers=tenant.headers())
    adapter_moves = [
        (a["from_version"], a["to_version"]) for a in history.json() if a["kind"] == "adapter"
    ]
    assert adapter_moves == [(1, None), (None, 1)]


def test_failed_activation_keeps_the_old_version_serving(
    app_client: TestClient,
    tenant: TenantKeys,
    lora_dir: Path,
    tmp_path: Path,
    database: Database,
) -> None:
    create_agent(app_client, tenant)
    assert upload(app_client, tenant, lora_dir).status_code == 201
    assert activate(app_client, tenant, 1).status_code == 200

    broken = tmp_path / "broken"
    shutil.copytree(lora_dir, broken)
    config = json.loads((broken / "adapter_config.json").read_text())
    config["target_modules"] = ["no_such_module"]
    (broken / "adapter_config.json").write_text(json.dumps(config))
    assert upload(app_client, tenant, broken).status_code == 422  # refused before it is stored
    assert upload(app_client, tenant, lora_dir).status_code == 201
    # The stored file goes bad after it was accepted (a bad disk, a bad sync).
    with database.session() as session:
        stored = session.scalars(
            select(AdapterVersion).where(
                AdapterVersion.tenant_id == tenant.tenant_id, AdapterVersion.version == 2
            )
        ).one()
    (Path(stored.path) / "adapter_model.safetensors").write_bytes(b"\x00" * 4096)

    refused = activate(app_client, tenant, 2)
    assert refused.status_code == 422
    assert "cannot be served" in refused.json()["detail"]
    v2 = app_client.get("/api/v1/agents/support/adapters/2", headers=tenant.headers()).json()
    assert v2["status"] == "failed" and "safetensors" in v2["status_reason"]
    assert not v2["live"]
    served = chat(app_client, tenant, QUESTION)
    assert served.status_code == 200
    assert served.headers["x-fastslow-adapter-version"] == "1"


def test_bad_uploads_store_nothing(
    app_client: TestClient,
    tenant: TenantKeys,
    lora_dir: Path,
    tmp_path: Path,
    settings: Settings,
) -> None:
    create_agent(app_client, tenant)

    def variant(name: str, config_patch: dict[str, Any] | None, weights: bytes | None) -> Path:
        target = tmp_path / name
        shutil.copytree(lora_dir, target)
        if config_patch is not None:
            config = json.loads((target / "adapter_config.json").read_text())
            config.update(config_patch)
            (target / "adapter_config.json").write_text(json.dumps(config))
        if weights is not None:
            (target / "adapter_model.safetensors").write_bytes(weights)
        return target

    not_json = tmp_path / "not-json"
    shutil.copytree(lora_dir, not_json)
    (not_json / "adapter_config.json").write_text("{nope")
    cases = {
        "not json": not_json,
        "not lora": variant("prefix", {"peft_type": "PREFIX_TUNING"}, None),
        "rank too high": variant("rank", {"r": 4096}, None),
        "rank mismatch": variant("mismatch", {"r": 4}, None),
        "junk weights": variant("junk", None, b"\x00" * 64),
    }
    for name, directory in cases.items():
        response = upload(app_client, tenant, directory)
        assert response.status_code == 422, (name, response.text)
    assert app_client.get("/api/v1/agents/support/adapters", headers=tenant.headers()).json() == []
    leftovers = [p for p in settings.adapters_dir.rglob("*") if p.name.startswith(".staging")]
    assert leftovers == []
