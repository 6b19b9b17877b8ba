"""Adapter versions in an fsspec store (an object store in production; a file:// URL here)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from backend.adapters.storage import FILES, FsspecAdapterStore
from backend.app import create_app
from backend.config import Settings
from backend.engines.local import LocalEngine
from tests.backend.adapters.test_adapters import QUESTION, activate, upload
from tests.backend.helpers import chat, create_agent
from tests.conftest import TenantKeys
from tests.support import make_lora, reference_generate


def test_store_round_trip_in_memory(tmp_path: Path, base_model_dir: Path) -> None:
    lora = make_lora(base_model_dir, tmp_path / "lora", seed=5)
    store = FsspecAdapterStore("memory://fastslow-test/adapters", tmp_path / "cache")
    staging = store.staging_dir()
    for name in FILES:
        (staging / name).write_bytes((lora / name).read_bytes())
    ids = (uuid.uuid4(), uuid.uuid4(), uuid.uuid4())
    location = store.commit(staging, tenant_id=ids[0], agent_id=ids[1], version_id=ids[2])
    assert location.startswith("memory://fastslow-test/adapters/")
    assert not staging.exists()
    local = store.local_dir(location)
    assert local.is_relative_to(tmp_path / "cache")
    for name in FILES:
        assert (local / name).read_bytes() == (lora / name).read_bytes()
    assert store.local_dir(location) == local, "materialised once"
    store.discard(location)
    assert not store.fs.exists(location.removeprefix("memory://"))


@pytest.fixture
def object_store_client(
    settings: Settings, local_engine: LocalEngine, tmp_path: Path
) -> Iterator[tuple[TestClient, Path, Path]]:
    remote, cache = tmp_path / "bucket", tmp_path / "cache"
    custom = settings.model_copy(
        update={"adapter_store_url": f"file://{remote}", "adapter_cache_dir": cache}
    )
    with TestClient(create_app(custom, engine=local_engine)) as client:
        yield client, remote, cache


def test_platform_serves_adapters_from_an_fsspec_store(
    object_store_client: tuple[TestClient, Path, Path],
    tenant: TenantKeys,
    base_model_dir: Path,
    tmp_path: Path,
) -> None:
    client, remote, cache = object_store_client
    create_agent(client, tenant, system_prompt="")
    lora = make_lora(base_model_dir, tmp_path / "lora", seed=1)
    assert upload(client, tenant, lora).status_code == 201
    assert activate(client, tenant, 1).status_code == 200
    stored = [p.name for p in remote.rglob("*") if p.is_file()]
    assert sorted(stored) == sorted(FILES)
    answer = chat(client, tenant, QUESTION, max_tokens=16).json()
    expected = reference_generate(base_model_dir, [{"role": "user", "content": QUESTION}], 16, lora)
    assert answer["choices"][0]["message"]["content"] == expected
    assert [p.name for p in cache.rglob("*") if p.is_file()], "materialised for the engine"
