"""Adapters are data, never configuration: a tenant's adapter cannot change what other
tenants are served, nor hang the engine (issue: one tenant must never reach another).

Against a real `fastslow api` process on the local engine with the real base model: every
hostile kind of adapter is refused at upload with a 422 naming the offending key; the same
files stored before these rules (planted in the store) are refused again at activation; and
through it all another tenant's greedy answer stays the same and `/healthz` keeps answering.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import torch
from safetensors.torch import load_file, save_file
from sqlalchemy import select

from backend.adapters.models import AdapterSource, AdapterStatus, AdapterVersion
from backend.adapters.service import register_adapter
from backend.adapters.storage import adapter_store
from backend.agents.models import Agent
from backend.config import Settings
from backend.db import Database
from backend.engines.lora import CONFIG_FILE, WEIGHTS_FILE, AdapterValidator
from backend.errors import Invalid
from tests.conftest import TenantKeys
from tests.support import make_lora

QUESTION = "What is the capital of France?"
LAYER0_Q = "base_model.model.model.layers.0.self_attn.q_proj"

Mutation = Callable[[dict[str, Any], dict[str, torch.Tensor]], None]


def _extra_norm(config: dict[str, Any], weights: dict[str, torch.Tensor]) -> None:
    # The attack that changed other tenants' answers: a base weight, negated.
    weights["base_model.model.model.norm.weight"] = -torch.ones(576)


def _extra_embedding(config: dict[str, Any], weights: dict[str, torch.Tensor]) -> None:
    weights["base_model.model.model.embed_tokens.weight"] = torch.zeros(49152, 576)


def _extra_bias(config: dict[str, Any], weights: dict[str, torch.Tensor]) -> None:
    weights[f"{LAYER0_Q}.bias"] = torch.ones(576)


def _option(key: str, value: Any) -> Mutation:
    def mutate(config: dict[str, Any], weights: dict[str, torch.Tensor]) -> None:
        config[key] = value

    return mutate


def _nan(config: dict[str, Any], weights: dict[str, torch.Tensor]) -> None:
    weights[f"{LAYER0_Q}.lora_B.weight"][0, 0] = float("nan")


def _inf(config: dict[str, Any], weights: dict[str, torch.Tensor]) -> None:
    weights[f"{LAYER0_Q}.lora_A.weight"][0, 0] = float("inf")


def _wrong_rank(config: dict[str, Any], weights: dict[str, torch.Tensor]) -> None:
    weights[f"{LAYER0_Q}.lora_A.weight"] = torch.zeros(4, 576)


def _wrong_width(config: dict[str, Any], weights: dict[str, torch.Tensor]) -> None:
    weights[f"{LAYER0_Q}.lora_B.weight"] = torch.zeros(1024, 8)


def _missing(config: dict[str, Any], weights: dict[str, torch.Tensor]) -> None:
    del weights[f"{LAYER0_Q}.lora_B.weight"]


def _int_tensor(config: dict[str, Any], weights: dict[str, torch.Tensor]) -> None:
    weights[f"{LAYER0_Q}.lora_A.weight"] = torch.zeros(8, 576, dtype=torch.int32)


# (name, mutation, what the 422 must name)
HOSTILE: list[tuple[str, Mutation, str]] = [
    ("extra tensor: a base weight", _extra_norm, "model.norm.weight"),
    ("extra tensor: the embeddings", _extra_embedding, "embed_tokens.weight"),
    ("extra tensor: a base bias", _extra_bias, "q_proj.bias"),
    (
        "rewrites base layers: PiSSA init",
        _option("init_lora_weights", "pissa"),
        "init_lora_weights",
    ),
    (
        "rewrites base layers: modules_to_save",
        _option("modules_to_save", ["lm_head"]),
        "modules_to_save",
    ),
    (
        "rewrites base layers: layer_replication",
        _option("layer_replication", [[0, 4]]),
        "layer_replication",
    ),
    ("rewrites base layers: bias training", _option("bias", "all"), "bias"),
    ("rewrites base layers: DoRA", _option("use_dora", True), "use_dora"),
    ("regex: target_modules", _option("target_modules", "(.*.*)*z"), "target_modules"),
    ("regex: rank_pattern", _option("rank_pattern", {"(.*.*)*z": 4}), "rank_pattern"),
    ("regex: alpha_pattern", _option("alpha_pattern", {"(.*.*)*z": 4}), "alpha_pattern"),
    ("regex: exclude_modules", _option("exclude_modules", "(.*.*)*z"), "exclude_modules"),
    ("unknown module", _option("target_modules", ["q_proj", "lm_head"]), "lm_head"),
    ("rank over the limit", _option("r", 4096), "rank"),
    ("alpha not a number", _option("lora_alpha", "16"), "lora_alpha"),
    ("non-finite: NaN", _nan, "non-finite"),
    ("non-finite: infinity", _inf, "non-finite"),
    ("wrong shape: rank", _wrong_rank, "shape"),
    ("wrong shape: width", _wrong_width, "shape"),
    ("missing tensor", _missing, "lacks"),
    ("integer tensor", _int_tensor, "dtype"),
]


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory: pytest.TempPathFactory, base_model_dir: Path) -> Path:
    # Targets q/v/o/up/down, rank 8, non-zero B: a real adapter that changes answers.
    return make_lora(base_model_dir, tmp_path_factory.mktemp("lora"), seed=3)


def hostile_copy(source: Path, target: Path, mutate: Mutation) -> Path:
    target.mkdir(parents=True)
    config = json.loads((source / CONFIG_FILE).read_text())
    weights = load_file(str(source / WEIGHTS_FILE))
    mutate(config, weights)
    (target / CONFIG_FILE).write_text(json.dumps(config))
    save_file(weights, str(target / WEIGHTS_FILE))
    return target


def upload(client: httpx.Client, tenant: TenantKeys, directory: Path) -> httpx.Response:
    with (
        (directory / CONFIG_FILE).open("rb") as config,
        (directory / WEIGHTS_FILE).open("rb") as weights,
    ):
        return client.post(
            "/api/v1/agents/support/adapters",
            files={"config": config, "weights": weights},
            headers=tenant.headers(),
        )


def greedy(client: httpx.Client, tenant: TenantKeys) -> str:
    response = client.post(
        "/v1/chat/completions",
        json={
            "model": "support",
            "messages": [{"role": "user", "content": QUESTION}],
            "max_tokens": 12,
            "temperature": 0,
        },
        headers=tenant.headers(),
    )
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["message"]["content"])


class HealthWatch:
    """Polls `/healthz` from another thread for as long as the test runs."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[tuple[int, float]] = []  # (status, seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    status = client.get(f"{self.url}/healthz").status_code
                except httpx.HTTPError:
                    status = 0
                self.samples.append((status, time.monotonic() - started))
                self._stop.wait(0.2)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=35)


class _Legacy:
    """Registration as it was before these rules (a boundary fake): the files are stored as
    they came, to show activation does not trust what is already in the store."""

    def sanitize(self, directory: Path) -> dict[str, Any]:
        config: dict[str, Any] = json.loads((directory / CONFIG_FILE).read_text())
        return config


def plant(database: Database, settings: Settings, tenant: TenantKeys, directory: Path) -> int:
    store = adapter_store(settings)
    staging = store.staging_dir()
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        shutil.copy(directory / name, staging / name)
    with database.session() as session:
        agent = session.scalars(
            select(Agent).where(Agent.tenant_id == tenant.tenant_id, Agent.slug == "support")
        ).one()
        row = register_adapter(
            session,
            store,
            agent=agent,
            staging=staging,
            source=AdapterSource.UPLOAD,
            validator=cast(AdapterValidator, _Legacy()),
        )
        return row.version


@pytest.fixture
def clients(api_server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_server, timeout=120) as client:
        yield client


def test_hostile_adapters_never_reach_another_tenant(
    clients: httpx.Client,
    api_server: str,
    new_tenant: Callable[[], TenantKeys],
    lora_dir: Path,
    tmp_path: Path,
    database: Database,
    settings: Settings,
) -> None:
    attacker, victim = new_tenant(), new_tenant()
    for tenant in (attacker, victim):
        created = clients.post(
            "/api/v1/agents",
            json={"slug": "support", "system_prompt": ""},
            headers=tenant.headers(),
        )
        assert created.status_code == 201, created.text
    before = greedy(clients, victim)
    assert "Paris" in before

    with HealthWatch(api_server) as health:
        # The honest adapter is accepted, and its stored config is the rebuilt one.
        honest = upload(clients, attacker, lora_dir)
        assert honest.status_code == 201, honest.text

        for name, mutate, named in HOSTILE:
            directory = hostile_copy(lora_dir, tmp_path / uuid.uuid4().hex, mutate)
            response = upload(clients, attacker, directory)
            assert response.status_code == 422, f"{name}: {response.status_code} {response.text}"
            assert named in response.text, f"{name}: the error does not name {named!r}"

        # Stored before the rules: activation checks the files again and refuses them.
        planted = [
            ("a base weight", _extra_norm),
            ("PiSSA init", _option("init_lora_weights", "pissa")),
            ("regex target_modules", _option("target_modules", "(.*.*)*z")),
        ]
        for name, mutate in planted:
            directory = hostile_copy(lora_dir, tmp_path / uuid.uuid4().hex, mutate)
            version = plant(database, settings, attacker, directory)
            response = clients.post(
                "/api/v1/agents/support/adapters/activate",
                json={"version": version, "reason": "attack"},
                headers=attacker.headers(),
            )
            assert response.status_code == 422, f"{name}: {response.status_code} {response.text}"
            assert "refused" in response.text, name
            with database.session() as session:
                row = session.scalars(
                    select(AdapterVersion).where(
                        AdapterVersion.tenant_id == attacker.tenant_id,
                        AdapterVersion.version == version,
                    )
                ).one()
                assert row.status == AdapterStatus.FAILED, name
        # The attacker's own agent still serves (the base model: nothing was activated).
        assert greedy(clients, attacker) == before

    assert greedy(clients, victim) == before
    assert health.samples, "the health watch never ran"
    assert all(status == 200 for status, _ in health.samples), health.samples
    assert max(seconds for _, seconds in health.samples) < 10, health.samples


def test_the_rebuilt_config_holds_only_what_was_checked(
    lora_dir: Path, tmp_path: Path, base_model_dir: Path
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(lora_dir, copy)
    original = json.loads((copy / CONFIG_FILE).read_text())
    assert original["init_lora_weights"] is False and "megatron_core" in original
    validator = AdapterValidator.for_base_model(base_model_dir)
    rebuilt = validator.sanitize(copy)
    assert json.loads((copy / CONFIG_FILE).read_text()) == rebuilt
    assert set(rebuilt) == {
        "peft_type",
        "task_type",
        "r",
        "lora_alpha",
        "lora_dropout",
        "target_modules",
        "bias",
        "use_rslora",
        "init_lora_weights",
        "fan_in_fan_out",
        "inference_mode",
        "base_model_name_or_path",
    }
    assert rebuilt["target_modules"] == sorted(original["target_modules"])
    assert (rebuilt["r"], rebuilt["lora_alpha"]) == (original["r"], original["lora_alpha"])
    # Sanitising twice changes nothing; a stored version validates as it is.
    assert validator.sanitize(copy) == rebuilt == validator.validate(copy)


def test_a_huge_alpha_or_a_non_llama_base_is_refused(base_model_dir: Path, tmp_path: Path) -> None:
    strict = AdapterValidator.for_base_model(base_model_dir, max_rank=8, max_alpha=32)
    lora = make_lora(base_model_dir, tmp_path / "lora", seed=4)
    hostile = hostile_copy(lora, tmp_path / "alpha", _option("lora_alpha", 1e9))
    with pytest.raises(Invalid, match="lora_alpha"):
        strict.validate(hostile)
    other = tmp_path / "gpt2"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(Invalid, match="Llama-style"):
        AdapterValidator.for_base_model(other).validate(lora)
