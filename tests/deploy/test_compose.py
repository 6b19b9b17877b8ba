"""docker-compose.yml against the Compose specification's JSON schema (the copy check-jsonschema
ships; no network) and against what the platform needs to run from it."""

from __future__ import annotations

import copy
import importlib.resources
import json
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.support import check_fastslow_command, unknown_settings
from tests.support import REPO

COMPOSE = REPO / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())  # anchors and `<<` resolved
    return data


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    vendored = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads((vendored / "compose-spec.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _errors(validator: jsonschema.protocols.Validator, data: dict[str, Any]) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(data)]


def test_compose_file_follows_the_compose_specification(
    validator: jsonschema.protocols.Validator, compose: dict[str, Any]
) -> None:
    assert _errors(validator, compose) == []


def test_the_schema_catches_mistakes(
    validator: jsonschema.protocols.Validator, compose: dict[str, Any]
) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["api"]["depends_on"]["postgres"]["condition"] = "service_ready"
    broken["services"]["beat"]["restart_policy"] = "always"
    errors = _errors(validator, broken)
    assert any("service_ready" in e for e in errors), errors
    assert any("restart_policy" in e for e in errors), errors


def test_services_health_checks_and_start_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {
        "postgres",
        "redis",
        "migrate",
        "model",
        "api",
        "worker-fast",
        "worker-train",
        "worker-train-cpu",
        "beat",
        "vllm",
        "vllm-cpu",
    }
    for name in ("postgres", "redis", "api", "worker-fast", "worker-train", "vllm", "vllm-cpu"):
        assert "test" in services[name]["healthcheck"], name
    for name in ("api", "worker-fast", "worker-train", "worker-train-cpu", "beat"):
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
    assert services["migrate"]["restart"] == "no"
    for engine in ("vllm", "vllm-cpu"):
        assert services["api"]["depends_on"][engine] == {
            "condition": "service_healthy",
            "required": False,
        }
        assert services[engine]["depends_on"]["model"]["condition"] == (
            "service_completed_successfully"
        )
    assert "deploy" not in services["beat"] and "scale" not in services["beat"]  # exactly one


def test_gpu_profile_and_cpu_profile_swap_the_engine(compose: dict[str, Any]) -> None:
    services = compose["services"]
    gpu = {n for n, s in services.items() if "gpu" in s.get("profiles", [])}
    cpu = {n for n, s in services.items() if "cpu" in s.get("profiles", [])}
    assert gpu == {"vllm", "worker-train"}
    assert cpu == {"vllm-cpu", "worker-train-cpu"}
    for name in gpu:
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}], name
    for name in cpu:
        assert "deploy" not in services[name], name
    # Both engines answer as `vllm`, the URL every fastslow process is given.
    assert services["vllm-cpu"]["networks"]["default"]["aliases"] == ["vllm"]
    assert services["api"]["environment"]["FASTSLOW_ENGINE_URL"] == "http://vllm:8000"
    assert services["vllm"]["image"].startswith("vllm/vllm-openai:")
    for engine in ("vllm", "vllm-cpu"):
        assert services[engine]["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
        assert "--enable-lora" in services[engine]["command"]
    assert "--dtype=float32" in services["vllm-cpu"]["command"]


def test_fastslow_services_use_real_settings_commands_and_shared_volumes(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    fastslow = {n: s for n, s in services.items() if s.get("image", "").startswith("fastslow")}
    assert set(fastslow) == {
        "migrate",
        "model",
        "api",
        "worker-fast",
        "worker-train",
        "worker-train-cpu",
        "beat",
    }
    for name, service in fastslow.items():
        assert unknown_settings(service["environment"]) == [], name
        check_fastslow_command(service["command"])
        assert (REPO / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
        assert {"data:/data", "adapters:/data/adapters"} <= set(service["volumes"]), name
    for engine in ("vllm", "vllm-cpu"):
        assert {"data:/data", "adapters:/data/adapters"} <= set(services[engine]["volumes"])
    assert {"pgdata", "redisdata", "data", "adapters"} <= set(compose["volumes"])
    assert services["worker-train"]["build"]["args"]["TORCH_INDEX_URL"] == "https://pypi.org/simple"
    queues = {
        n: s["command"][s["command"].index("--queues") + 1]
        for n, s in fastslow.items()
        if "worker" in s["command"]
    }
    assert queues == {
        "worker-fast": "fast,maintenance",
        "worker-train": "train",
        "worker-train-cpu": "train",
    }


def test_one_engine_key_for_vllm_and_the_platform(compose: dict[str, Any]) -> None:
    """vLLM requires the key (VLLM_API_KEY) the platform sends (FASTSLOW_ENGINE_API_KEY):
    both from one variable, which Compose refuses to run without; the metrics token too."""
    services = compose["services"]
    engine_key = "${FASTSLOW_ENGINE_API_KEY:?"
    for engine in ("vllm", "vllm-cpu"):
        assert services[engine]["environment"]["VLLM_API_KEY"].startswith(engine_key), engine
        assert not [a for a in services[engine]["command"] if "api-key" in a]  # shows in `ps`
    for name, service in services.items():
        if service.get("image", "").startswith("fastslow"):
            environment = service["environment"]
            assert environment["FASTSLOW_ENGINE_API_KEY"].startswith(engine_key), name
            assert environment["FASTSLOW_ENVIRONMENT"] == "production", name
            assert environment["FASTSLOW_METRICS_TOKEN"].startswith("${FASTSLOW_METRICS_TOKEN:?"), (
                name
            )


def test_only_the_api_is_published(compose: dict[str, Any]) -> None:
    """PostgreSQL, Redis and vLLM are reachable on the project's network only."""
    published = {n for n, s in compose["services"].items() if s.get("ports")}
    assert published == {"api"}
