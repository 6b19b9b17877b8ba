"""The vLLM server is started with the platform's engine key and refuses callers without it:
its API loads adapters from any path the server can read."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from backend.config import Settings
from backend.engines.vllm_server import vllm_launch
from tests.conftest import VllmServer
from tests.support import VENV_BIN


def test_vllm_launch_hands_the_engine_key_to_vllm(tmp_path: Path) -> None:
    key = "engine-secret-123"
    launch = vllm_launch(
        Settings(data_dir=tmp_path, engine_api_key=SecretStr(key)), host="127.0.0.1", port=8000
    )
    assert launch.env["VLLM_API_KEY"] == key
    assert not [arg for arg in launch.argv if key in arg]  # argv is visible to `ps`
    keyless = vllm_launch(Settings(data_dir=tmp_path), host="127.0.0.1", port=8000)
    assert "VLLM_API_KEY" not in keyless.env


def _fastslow_engine(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`fastslow engine` with a stand-in for vLLM's Python that prints what it was given."""
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\necho "VLLM_API_KEY=$VLLM_API_KEY"\necho "ARGS=$*"\n')
    fake.chmod(0o755)
    base = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "FASTSLOW_DATA_DIR": str(tmp_path / "data"),
        "FASTSLOW_VLLM_PYTHON": str(fake),
    }
    return subprocess.run(
        [str(VENV_BIN / "fastslow"), "engine"],
        env={**base, **env},
        cwd=tmp_path,  # no .env file of the checkout
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_fastslow_engine_needs_a_key_outside_development(tmp_path: Path) -> None:
    production = {"FASTSLOW_ENVIRONMENT": "production", "FASTSLOW_PLATFORM_KEY": "p" * 32}
    refused = _fastslow_engine(tmp_path, **production)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "FASTSLOW_ENGINE_API_KEY" in refused.stderr
    assert "VLLM_API_KEY=" not in refused.stdout  # vLLM was never started

    started = _fastslow_engine(tmp_path, **production, FASTSLOW_ENGINE_API_KEY="k" * 32)
    assert started.returncode == 0, started.stderr
    assert f"VLLM_API_KEY={'k' * 32}" in started.stdout
    assert "k" * 32 not in started.stdout.split("ARGS=", 1)[1]

    development = _fastslow_engine(tmp_path)  # a local trial may run it open
    assert development.returncode == 0, development.stderr
    assert "VLLM_API_KEY=\n" in development.stdout


@pytest.mark.vllm
def test_the_vllm_server_refuses_callers_without_the_key(vllm_server: VllmServer) -> None:
    url = vllm_server.url
    assert httpx.get(f"{url}/v1/models", timeout=30).status_code == 401
    load = {"lora_name": "intruder", "lora_path": "/etc"}
    assert httpx.post(f"{url}/v1/load_lora_adapter", json=load, timeout=30).status_code == 401
    wrong = {"Authorization": "Bearer wrong"}
    assert httpx.get(f"{url}/v1/models", headers=wrong, timeout=30).status_code == 401
    right = {"Authorization": f"Bearer {vllm_server.api_key}"}
    assert httpx.get(f"{url}/v1/models", headers=right, timeout=30).status_code == 200
