"""The engines under contract: the local engine and a real vLLM server (CPU build)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from backend.config import Settings
from backend.engines import Engine
from backend.engines.local import LocalEngine
from backend.engines.vllm import VllmEngine
from backend.engines.vllm_server import vllm_launch
from tests.support import REPO, Process, free_port, http_ok, wait_until

VLLM_START_TIMEOUT_S = 600


@pytest.fixture(scope="session")
def vllm_server(base_model_dir: Path) -> Iterator[str]:
    """A real vLLM OpenAI server for the base model, started once per run."""
    settings = Settings(
        base_model=str(base_model_dir), vllm_python=REPO / ".venv-vllm" / "bin" / "python"
    )
    if not settings.vllm_python.exists():
        pytest.fail("no vLLM environment: run `make vllm-env` (make test does)")
    port = free_port()
    launch = vllm_launch(settings, host="127.0.0.1", port=port, gpu=False)
    server = Process("vllm", launch.argv, launch.env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: http_ok(f"{url}/health") or not server.alive,
            timeout=VLLM_START_TIMEOUT_S,
            interval=1,
            what="vLLM to start",
        )
        assert server.alive, f"vLLM exited:\n{server.log_tail()}"
        yield url
    finally:
        server.stop()


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
    url = request.getfixturevalue("vllm_server")
    engine = VllmEngine(url, base_model_dir.name, timeout_s=120)
    yield engine
    await engine.aclose()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "[vllm" in item.nodeid:
            item.add_marker(pytest.mark.vllm)
