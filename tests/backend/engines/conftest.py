"""The engines under contract: the local engine and a real vLLM server (CPU build)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from backend.engines import Engine
from backend.engines.local import LocalEngine
from backend.engines.lora import AdapterValidator
from backend.engines.vllm import VllmEngine
from tests.conftest import VllmServer


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["local", "vllm"])
async def engine(
    request: pytest.FixtureRequest, local_engine: LocalEngine, base_model_dir: Path
) -> AsyncIterator[Engine]:
    """Each engine, created in the test's own event loop."""
    if request.param == "local":
        yield local_engine
        return
    server: VllmServer = request.getfixturevalue("vllm_server")
    engine = VllmEngine(
        server.url,
        base_model_dir.name,
        api_key=server.api_key,
        timeout_s=120,
        adapter_validator=AdapterValidator.for_base_model(base_model_dir),
    )
    yield engine
    await engine.aclose()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "[vllm" in item.nodeid:
            item.add_marker(pytest.mark.vllm)
