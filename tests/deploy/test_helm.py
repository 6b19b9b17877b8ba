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
        "FASTSLOW_ENGINE_API_KEY": "engine-secret",
        "FASTSLOW_METRICS_TOKEN": "scrape-secret",
    }
}
# Everything optional switched on: ingress with TLS, object storage, a metrics token, a
# ServiceMonitor, an existing claim, extra vLLM flags.
EVERYTHING = {
    "secrets": {
        **REQUIRED["secrets"],
        "AWS_ACCESS_KEY_ID": "id",
        "AWS_SECRET_ACCESS_KEY": "key",
    },
    "ingress": {"enabled": True, "className": "nginx", "tls": {"clusterIssuer": "letsencrypt"}},
    "networkPolicy": {
        "apiFrom": [{"namespaceSelector": {"matchLabels": {"name": "ingress-nginx"}}}],
        "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
    },
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
    assert {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "ConfigMap",
        "Job",
        "NetworkPolicy",
    } <= kinds


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
    assert set(secret) == {
        "FASTSLOW_PLATFORM_KEY",
        "FASTSLOW_DATABASE_URL",
        "FASTSLOW_BROKER_URL",
        "FASTSLOW_ENGINE_API_KEY",
        "FASTSLOW_METRICS_TOKEN",
    }
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


def _policies(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {n: m["spec"] for n, m in by_name(manifests, "NetworkPolicy").items()}


def _components(peer: dict[str, Any]) -> set[str]:
    """The components a pod-selector peer of this release admits."""
    selector = peer["podSelector"]
    assert selector["matchLabels"] == {
        "app.kubernetes.io/name": "fastslow",
        "app.kubernetes.io/instance": "prod",
    }
    (expression,) = selector["matchExpressions"]
    assert expression["key"] == "app.kubernetes.io/component"
    assert expression["operator"] == "In"
    return set(expression["values"])


def test_ingress_defaults_to_tls() -> None:
    """Switching the ingress on gives HTTPS without asking for it; cert-manager is optional."""
    manifests = render({**REQUIRED, "ingress": {"enabled": True}})
    ingress = by_name(manifests, "Ingress")["prod-fastslow"]
    assert ingress["spec"]["tls"] == [
        {"hosts": ["fastslow.example.com"], "secretName": "fastslow-tls"}
    ]
    assert "cert-manager.io/cluster-issuer" not in ingress["metadata"].get("annotations", {})
    issued = render({**REQUIRED, "ingress": {"enabled": True, "tls": {"clusterIssuer": "le"}}})
    annotations = by_name(issued, "Ingress")["prod-fastslow"]["metadata"]["annotations"]
    assert annotations["cert-manager.io/cluster-issuer"] == "le"
    off = render({**REQUIRED, "ingress": {"enabled": True, "tls": {"enabled": False}}})
    assert "tls" not in by_name(off, "Ingress")["prod-fastslow"]["spec"]


def test_network_policies_keep_the_backends_private(manifests: list[dict[str, Any]]) -> None:
    """By default only the API takes traffic from outside the release; vLLM only from the
    API and the workers; PostgreSQL and Redis only from the platform's pods."""
    policies = _policies(manifests)
    assert set(policies) == {
        "prod-fastslow-default-deny",
        "prod-fastslow-api",
        "prod-fastslow-vllm",
        "prod-fastslow-postgres",
        "prod-fastslow-redis",
    }
    for spec in policies.values():
        assert spec["policyTypes"] == ["Ingress"]
    deny = policies["prod-fastslow-default-deny"]
    assert deny["podSelector"] == {
        "matchLabels": {"app.kubernetes.io/name": "fastslow", "app.kubernetes.io/instance": "prod"}
    }
    assert "ingress" not in deny  # every pod of the release: nothing in but what is let in

    api = policies["prod-fastslow-api"]
    assert api["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "api"
    assert api["ingress"] == [{"ports": [{"port": 8080, "protocol": "TCP"}]}]
    # The only pods anything outside the release may reach are the API's.
    for name, spec in policies.items():
        for rule in spec.get("ingress", []):
            if name != "prod-fastslow-api":
                assert rule.get("from"), name

    vllm = policies["prod-fastslow-vllm"]
    assert vllm["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "vllm"
    (rule,) = vllm["ingress"]
    assert rule["ports"] == [{"port": 8000, "protocol": "TCP"}]
    (peer,) = rule["from"]
    assert _components(peer) == {"api", "worker-fast", "worker-train"}

    for backend, port, name in (("postgres", 5432, "postgresql"), ("redis", 6379, "redis")):
        spec = policies[f"prod-fastslow-{backend}"]
        assert spec["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": name}}
        (rule,) = spec["ingress"]
        assert rule["ports"] == [{"port": port, "protocol": "TCP"}]
        (peer,) = rule["from"]
        assert _components(peer) == {"api", "worker-fast", "worker-train", "beat", "migrate"}

    # Every component a policy names is a real pod label of the chart.
    labels = {
        m["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
        for m in manifests
        if m["kind"] in ("Deployment", "Job")
    }
    assert {"api", "worker-fast", "worker-train", "beat", "migrate", "vllm"} <= labels

    scrapers = render(EVERYTHING)
    policies = _policies(scrapers)
    assert (
        policies["prod-fastslow-api"]["ingress"][0]["from"]
        == (
            EVERYTHING["networkPolicy"]["apiFrom"]  # type: ignore[index]
        )
    )
    monitoring = EVERYTHING["networkPolicy"]["metricsFrom"]  # type: ignore[index]
    assert policies["prod-fastslow-worker-metrics"]["ingress"][0]["from"] == monitoring
    assert monitoring[0] in policies["prod-fastslow-vllm"]["ingress"][0]["from"]
    off = render({**REQUIRED, "networkPolicy": {"enabled": False}})
    assert "NetworkPolicy" not in {m["kind"] for m in off}


def test_vllm_and_the_platform_share_the_engine_key(manifests: list[dict[str, Any]]) -> None:
    """One Secret key: vLLM requires it (VLLM_API_KEY), the platform's pods send it
    (FASTSLOW_ENGINE_API_KEY through envFrom); production also needs the metrics token."""
    secret_name = "prod-fastslow-secrets"
    secret = by_name(manifests, "Secret")[secret_name]["stringData"]
    assert secret["FASTSLOW_ENGINE_API_KEY"] == "engine-secret"
    deployments = by_name(manifests, "Deployment")
    vllm = deployments["prod-fastslow-vllm"]["spec"]["template"]["spec"]["containers"][0]
    assert {
        "name": "VLLM_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": secret_name, "key": "FASTSLOW_ENGINE_API_KEY"}},
    } in vllm["env"]
    assert not [a for a in vllm["args"] if "api-key" in a]  # argv shows in `ps`
    for name in ("prod-fastslow-api", "prod-fastslow-worker-fast", "prod-fastslow-worker-train"):
        container = deployments[name]["spec"]["template"]["spec"]["containers"][0]
        assert {"secretRef": {"name": secret_name}} in container["envFrom"], name

    # Managed Secrets too: vLLM reads the key from it, whatever values say.
    managed = render(
        {"secrets": {"existingSecret": "mine"}, "metrics": {"tokenInExistingSecret": True}}
    )
    vllm = by_name(managed, "Deployment")["prod-fastslow-vllm"]["spec"]["template"]["spec"]
    ref = next(e for e in vllm["containers"][0]["env"] if e["name"] == "VLLM_API_KEY")
    assert ref["valueFrom"]["secretKeyRef"] == {"name": "mine", "key": "FASTSLOW_ENGINE_API_KEY"}

    without = {k: v for k, v in REQUIRED["secrets"].items() if k != "FASTSLOW_ENGINE_API_KEY"}
    with pytest.raises(helm.HelmRenderError, match="FASTSLOW_ENGINE_API_KEY is required"):
        render({"secrets": without})
    external = render(
        {"secrets": without, "vllm": {"enabled": False, "externalUrl": "http://llm:8000"}}
    )
    assert "FASTSLOW_ENGINE_API_KEY" not in by_name(external, "Secret")[secret_name]["stringData"]
    untokened = {k: v for k, v in REQUIRED["secrets"].items() if k != "FASTSLOW_METRICS_TOKEN"}
    with pytest.raises(helm.HelmRenderError, match="FASTSLOW_METRICS_TOKEN is required"):
        render({"secrets": untokened})
    render({"secrets": untokened, "config": {"FASTSLOW_METRICS_ENABLED": False}})
