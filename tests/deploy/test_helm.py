"""The Helm chart, rendered and linted by Helm's own engine (Helm's Go SDK, from the
helm-python-sdk wheel: no helm binary, no cluster, no network) and every rendered manifest
validated against the Kubernetes API schemas (kubernetes-validate ships them)."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from tests.deploy.support import check_fastslow_command, unknown_settings
from tests.support import REPO

CHART = REPO / "deploy" / "helm" / "fastslow"
KUBERNETES = "1.30.0"  # the oldest Kubernetes the chart is checked against (Chart.yaml: >=1.27)
REQUIRED = {
    "secrets": {
        "FASTSLOW_PLATFORM_KEY": "platform-secret",
        "FASTSLOW_DATABASE_URL": "postgresql+psycopg://fastslow:pw@postgres:5432/fastslow",
        "FASTSLOW_BROKER_URL": "redis://redis:6379/0",
    }
}
# Everything optional switched on: ingress with TLS, object storage, a metrics token, a
# ServiceMonitor, an existing claim, extra vLLM flags.
EVERYTHING = {
    "secrets": {
        **REQUIRED["secrets"],
        "FASTSLOW_METRICS_TOKEN": "scrape-secret",
        "AWS_ACCESS_KEY_ID": "id",
        "AWS_SECRET_ACCESS_KEY": "key",
    },
    "ingress": {"enabled": True, "className": "nginx", "tls": {"enabled": True}},
    "adapterStore": {"url": "s3://bucket/fastslow/adapters"},
    "storage": {"existingClaim": "shared-data"},
    "metrics": {"serviceMonitor": {"enabled": True}},
    "vllm": {"extraArgs": ["--gpu-memory-utilization=0.85"]},
}


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    chart = helm.Chart.load(CHART)
    rendered = chart.render(values, name="prod", namespace="fastslow", is_install=True)
    return [
        doc
        for path, text in sorted(rendered.items())
        if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def by_name(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    return render(REQUIRED)


def test_chart_lints_clean() -> None:
    report = helm.lint(CHART, REQUIRED, strict=True, kube_version=f"v{KUBERNETES}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # warnings and errors
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize("values", [REQUIRED, EVERYTHING], ids=["defaults", "everything"])
def test_rendered_manifests_are_valid_kubernetes(values: dict[str, Any]) -> None:
    manifests = render(values)
    kinds: set[str] = set()
    for manifest in manifests:
        if manifest["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD (prometheus-operator): no schema in Kubernetes itself
        kinds.add(manifest["kind"])
        kubernetes_validate.validate(manifest, KUBERNETES, strict=True)
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "ConfigMap", "Job"} <= kinds


def test_the_validation_catches_mistakes(manifests: list[dict[str, Any]]) -> None:
    api = by_name(manifests, "Deployment")["prod-fastslow-api"]
    broken = {**api, "spec": {**api["spec"], "replicas": "two"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)
    with pytest.raises(helm.HelmValuesError):  # values.schema.json
        render({**REQUIRED, "workers": {"fast": {"queues": "gpu"}}})
    with pytest.raises(helm.HelmRenderError, match="FASTSLOW_PLATFORM_KEY is required"):
        render({})


def test_workloads(manifests: list[dict[str, Any]]) -> None:
    deployments = by_name(manifests, "Deployment")
    assert set(deployments) == {
        "prod-fastslow-api",
        "prod-fastslow-worker-fast",
        "prod-fastslow-worker-train",
        "prod-fastslow-beat",
        "prod-fastslow-vllm",
    }
    pod = {name: d["spec"]["template"]["spec"] for name, d in deployments.items()}
    api = pod["prod-fastslow-api"]["containers"][0]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["startupProbe"]["httpGet"]["path"] == "/healthz"

    beat = deployments["prod-fastslow-beat"]["spec"]
    assert beat["replicas"] == 1 and beat["strategy"]["type"] == "Recreate"

    train = pod["prod-fastslow-worker-train"]
    assert train["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert train["containers"][0]["image"].startswith("fastslow-train:")
    assert train["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    fast = pod["prod-fastslow-worker-fast"]
    assert "nvidia.com/gpu" not in fast["containers"][0]["resources"].get("limits", {})
    assert "nodeSelector" not in fast

    vllm = pod["prod-fastslow-vllm"]
    assert vllm["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"name": "VLLM_ALLOW_RUNTIME_LORA_UPDATING", "value": "True"} in vllm["containers"][0][
        "env"
    ]
    assert "--enable-lora" in vllm["containers"][0]["args"]
    assert vllm["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/health"

    for name, spec in pod.items():
        containers = [*spec.get("initContainers", []), *spec["containers"]]
        for container in containers:
            if container["image"].startswith("fastslow"):
                check_fastslow_command(container["command"])
                assert spec["securityContext"].get("runAsNonRoot") or container.get(
                    "securityContext", {}
                ).get("runAsNonRoot"), name
        mounts = {m["mountPath"] for c in containers for m in c.get("volumeMounts", [])}
        if name != "prod-fastslow-beat":
            assert "/data" in mounts, name  # one shared volume: model, adapters, cache


def test_autoscaling_and_pools(manifests: list[dict[str, Any]]) -> None:
    hpas = by_name(manifests, "HorizontalPodAutoscaler")
    assert {h["spec"]["scaleTargetRef"]["name"] for h in hpas.values()} == {
        "prod-fastslow-api",
        "prod-fastslow-worker-fast",
    }
    deployments = by_name(manifests, "Deployment")
    # Autoscaled deployments leave `replicas` to the autoscaler.
    assert "replicas" not in deployments["prod-fastslow-api"]["spec"]
    assert deployments["prod-fastslow-worker-train"]["spec"]["replicas"] == 1
    commands = {
        name: d["spec"]["template"]["spec"]["containers"][0]["command"]
        for name, d in deployments.items()
        if "worker" in name
    }
    assert "--queues=fast,maintenance" in commands["prod-fastslow-worker-fast"]
    assert "--queues=train" in commands["prod-fastslow-worker-train"]


def test_settings_config_and_secrets(manifests: list[dict[str, Any]]) -> None:
    config = by_name(manifests, "ConfigMap")["prod-fastslow-config"]["data"]
    secret = by_name(manifests, "Secret")["prod-fastslow-secrets"]["stringData"]
    assert unknown_settings(config) == [] and unknown_settings(secret) == []
    assert config["FASTSLOW_ENGINE_URL"] == "http://prod-fastslow-vllm:8000"
    assert config["FASTSLOW_LOG_FORMAT"] == "json"
    assert set(secret) == {"FASTSLOW_PLATFORM_KEY", "FASTSLOW_DATABASE_URL", "FASTSLOW_BROKER_URL"}
    assert not {k for k in config if "KEY" in k or "TOKEN" in k or "DATABASE_URL" in k}
    for deployment in by_name(manifests, "Deployment").values():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            for variable in container.get("env", []):
                assert "value" not in variable or "KEY" not in variable["name"]


def test_optional_parts() -> None:
    manifests = render(EVERYTHING)
    ingress = by_name(manifests, "Ingress")["prod-fastslow"]["spec"]
    assert ingress["ingressClassName"] == "nginx" and ingress["tls"][0]["hosts"]
    backend = ingress["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] in by_name(manifests, "Service")
    config = by_name(manifests, "ConfigMap")["prod-fastslow-config"]["data"]
    assert config["FASTSLOW_ADAPTER_STORE_URL"] == "s3://bucket/fastslow/adapters"
    assert "PersistentVolumeClaim" not in {m["kind"] for m in manifests}  # existing claim
    monitor = next(m for m in manifests if m["kind"] == "ServiceMonitor")
    ports = {e["port"] for e in monitor["spec"]["endpoints"]}
    assert ports == {"http", "metrics"}
    named_ports = {
        p["name"] for s in by_name(manifests, "Service").values() for p in s["spec"]["ports"]
    }
    assert ports <= named_ports
    vllm = by_name(manifests, "Deployment")["prod-fastslow-vllm"]["spec"]["template"]["spec"]
    assert "--gpu-memory-utilization=0.85" in vllm["containers"][0]["args"]

    external = render({**REQUIRED, "vllm": {"enabled": False, "externalUrl": "http://llm:8000"}})
    assert "prod-fastslow-vllm" not in by_name(external, "Deployment")
    data = by_name(external, "ConfigMap")["prod-fastslow-config"]["data"]
    assert data["FASTSLOW_ENGINE_URL"] == "http://llm:8000"
