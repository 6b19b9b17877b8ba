"""Settings: embedded defaults, production guards, the environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from backend.config import Settings


def test_embedded_defaults_need_no_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("FASTSLOW_DATABASE_URL", "FASTSLOW_BROKER_URL", "FASTSLOW_BASE_MODEL"):
        monkeypatch.delenv(var, raising=False)
    settings = Settings(data_dir=tmp_path)
    assert settings.database_url == f"sqlite:///{tmp_path / 'fastslow.db'}"
    assert settings.broker_url == f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    assert settings.engine == "local"
    assert settings.base_model_path == tmp_path / "models" / "SmolLM2-135M-Instruct"
    assert settings.base_model_name == "SmolLM2-135M-Instruct"


def test_production_refuses_to_start_without_a_platform_key(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="PLATFORM_KEY"):
        Settings(data_dir=tmp_path, environment="production", platform_key=None)
    Settings(data_dir=tmp_path, environment="production", platform_key="s3cret")


def test_settings_read_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTSLOW_ENGINE", "vllm")
    monkeypatch.setenv("FASTSLOW_ENGINE_URL", "http://vllm:8000")
    monkeypatch.setenv("FASTSLOW_BASE_MODEL", str(tmp_path / "my-model"))
    settings = Settings(data_dir=tmp_path)
    assert settings.engine == "vllm"
    assert settings.engine_url == "http://vllm:8000"
    assert settings.base_model_name == "my-model"
    monkeypatch.setenv("FASTSLOW_ENGINE", "tgi")
    with pytest.raises(ValidationError):
        Settings(data_dir=tmp_path)
