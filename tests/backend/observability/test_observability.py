"""Metrics after real traffic, readiness when a dependency is down, request ids, JSON logs
without secrets, and a real worker's metrics and job-tagged logs."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from backend.agents.models import Agent
from backend.app import create_app
from backend.config import Settings
from backend.db import Database, utcnow
from backend.engines.local import LocalEngine
from backend.jobs.models import Job, JobKind, JobStatus
from backend.observability.logging import logging_config
from tests.backend.helpers import chat, create_agent, sse_events
from tests.conftest import PLATFORM_KEY, Stack, TenantKeys, start_worker
from tests.support import VENV_BIN, Process, free_port, http_ok, wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
HEALTHZ = {"method": "GET", "route": "/healthz", "status": "200"}
METRICS_TOKEN = "scrape-" + uuid.uuid4().hex


def scrape(
    client: TestClient | httpx.Client, path: str = "/metrics", token: str | None = METRICS_TOKEN
) -> Samples:
    """The samples of one scrape; sends `token` (ignored where none is configured)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = client.get(path, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


@pytest.fixture(scope="module")
def client(settings: Settings, local_engine: LocalEngine) -> Iterator[TestClient]:
    """The real app, reading the database's state at every scrape (with the token, which
    shows the per-tenant series)."""
    update = {"metrics_db_cache_s": 0, "metrics_token": SecretStr(METRICS_TOKEN)}
    with TestClient(create_app(settings.model_copy(update=update), engine=local_engine)) as client:
        yield client


def _unreachable_engine(settings: Settings, **more: Any) -> Settings:
    return settings.model_copy(
        update={"engine": "vllm", "engine_url": f"http://127.0.0.1:{free_port()}", **more}
    )


def test_metrics_expose_the_named_series_after_real_traffic(
    client: TestClient, tenant: TenantKeys, database: Database
) -> None:
    create_agent(client, tenant)
    ids = {"tenant": str(tenant.tenant_id), "agent": "support"}
    before = scrape(client)

    answer = chat(client, tenant, "Where is my parcel?")
    assert answer.status_code == 200, answer.text
    streamed = chat(client, tenant, "Hello!", stream=True, stream_options={"include_usage": True})
    assert streamed.status_code == 200
    usage = [answer.json()["usage"], sse_events(streamed.text)[-2]["usage"]]
    rating = {"completion_id": answer.json()["id"], "score": 1}
    for _ in range(2):  # a replay of the same Idempotency-Key is not a new rating
        stored = client.post(
            "/v1/feedback", json=rating, headers={**tenant.headers(), "Idempotency-Key": "k1"}
        )
        assert stored.status_code in (200, 201)
    assert client.get("/api/v1/agents/nobody", headers=tenant.headers()).status_code == 404

    # A finished training run of this agent, as a worker records it.
    with database.session() as session:
        agent = session.query(Agent).filter_by(tenant_id=tenant.tenant_id, slug="support").one()
        finished = utcnow()
        session.add(
            Job(
                tenant_id=tenant.tenant_id,
                agent_id=agent.id,
                kind=JobKind.TRAIN,
                status=JobStatus.SUCCEEDED,
                started_at=finished - timedelta(seconds=90),
                finished_at=finished,
                metrics={"candidate_reward": 0.42, "kl_to_base": 0.031, "curves": {}},
            )
        )
        session.commit()

    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    chat_route = {"method": "POST", "route": "/v1/chat/completions"}
    assert delta("fastslow_http_requests_total", **chat_route, status="200") == 2
    assert delta("fastslow_http_request_duration_seconds_count", **chat_route) == 2
    # Route templates, never raw paths.
    agent_route = {"method": "GET", "route": "/api/v1/agents/{slug}", "status": "404"}
    assert value(after, "fastslow_http_requests_total", **agent_route) >= 1
    assert not [labels for name, labels in after if ("route", "/api/v1/agents/nobody") in labels]

    assert (
        value(after, "fastslow_rollouts_total", **ids, finish_reason="length")
        + value(after, "fastslow_rollouts_total", **ids, finish_reason="stop")
        == 2
    )
    assert (
        value(after, "fastslow_chat_completion_duration_seconds_count", **ids, stream="true") == 1
    )
    assert (
        value(after, "fastslow_chat_completion_duration_seconds_count", **ids, stream="false") == 1
    )
    for kind in ("prompt", "completion"):
        expected = sum(u[f"{kind}_tokens"] for u in usage)
        assert value(after, "fastslow_tokens_total", **ids, kind=kind) == expected > 0
    assert value(after, "fastslow_feedback_total", **ids) == 1

    assert value(after, "fastslow_agent_live_prompt_version", **ids) == 1
    assert value(after, "fastslow_agent_live_adapter_version", **ids) == 0
    assert value(after, "fastslow_last_training_reward", **ids) == pytest.approx(0.42)
    assert value(after, "fastslow_last_training_kl", **ids) == pytest.approx(0.031)
    train_done = {"kind": "train", "status": "succeeded"}
    assert delta("fastslow_jobs", **train_done) == 1
    assert delta("fastslow_job_duration_seconds_count", **train_done) == 1
    assert delta("fastslow_job_duration_seconds_sum", **train_done) == pytest.approx(90, abs=1)
    assert value(after, "fastslow_database_metrics_up") == 1


def test_engine_errors_are_counted(settings: Settings, tenant: TenantKeys) -> None:
    with TestClient(create_app(_unreachable_engine(settings))) as down:
        create_agent(down, tenant, slug="unserved")
        unavailable = {"operation": "generate", "error": "unavailable"}
        before = value(scrape(down), "fastslow_engine_errors_total", **unavailable)
        response = chat(down, tenant, "Hi", model="unserved")
        assert response.status_code == 503
        after = scrape(down)
    assert value(after, "fastslow_engine_errors_total", **unavailable) == before + 1
    refused = {"method": "POST", "route": "/v1/chat/completions", "status": "503"}
    assert value(after, "fastslow_http_requests_total", **refused) >= 1


def test_metrics_can_be_disabled_or_protected(
    settings: Settings, local_engine: LocalEngine
) -> None:
    off = settings.model_copy(update={"metrics_enabled": False})
    with TestClient(create_app(off, engine=local_engine)) as client:
        assert client.get("/metrics").status_code == 404
    token = "scrape-" + uuid.uuid4().hex
    protected = settings.model_copy(update={"metrics_token": SecretStr(token)})
    with TestClient(create_app(protected, engine=local_engine)) as client:
        assert client.get("/metrics").status_code == 401
        bad = client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401
        good = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert good.status_code == 200 and "fastslow_http_requests_total" in good.text


def test_anonymous_scrapes_show_no_tenant_ids(
    settings: Settings, local_engine: LocalEngine, tenant: TenantKeys, database: Database
) -> None:
    """Without a token configured (development), anyone may scrape: they get the series that
    name no tenant (requests by route, engine errors, jobs), never a tenant's id or its
    agents' names. With the token, the per-tenant series are there."""
    token = "scrape-" + uuid.uuid4().hex
    with TestClient(create_app(settings, engine=local_engine)) as open_client:
        create_agent(open_client, tenant, slug="secret-project")
        assert chat(open_client, tenant, "Hi", model="secret-project").status_code == 200
        anonymous = open_client.get("/metrics")
        samples = scrape(open_client, token=None)
    assert anonymous.status_code == 200
    assert str(tenant.tenant_id) not in anonymous.text
    assert "secret-project" not in anonymous.text
    assert not [labels for _, labels in samples if "tenant" in dict(labels)]
    assert "fastslow_http_requests_total" in names(samples)
    assert "fastslow_database_metrics_up" in names(samples)

    protected = settings.model_copy(update={"metrics_token": SecretStr(token)})
    with TestClient(create_app(protected, engine=local_engine)) as client:
        assert client.get("/metrics").status_code == 401
        full = scrape(client, token=token)
    ids = {"tenant": str(tenant.tenant_id), "agent": "secret-project"}
    assert value(full, "fastslow_agent_live_prompt_version", **ids) == 1
    served = sum(
        value(full, "fastslow_rollouts_total", **ids, finish_reason=reason)
        for reason in ("stop", "length")
    )
    assert served == 1


def test_production_api_refuses_to_start_without_a_metrics_token(stack: Stack) -> None:
    """`fastslow api` with FASTSLOW_ENVIRONMENT=production and metrics on needs
    FASTSLOW_METRICS_TOKEN: it exits at once, saying so, rather than serve tenant ids."""
    port = free_port()
    api = Process(
        "api-production-no-token",
        [str(VENV_BIN / "fastslow"), "api", "--port", str(port)],
        {
            **stack.env,
            "FASTSLOW_ENVIRONMENT": "production",
            "FASTSLOW_ENGINE": "vllm",
            "FASTSLOW_ENGINE_URL": f"http://127.0.0.1:{free_port()}",
        },
        unset=("FASTSLOW_METRICS_TOKEN",),
    )
    try:
        wait_until(lambda: not api.alive, timeout=60, what="the API to refuse to start")
        assert "FASTSLOW_METRICS_TOKEN must be set" in api.log_tail()
        assert not http_ok(f"http://127.0.0.1:{port}/healthz")
    finally:
        api.stop()


def test_readyz_checks_database_broker_and_engine(
    client: TestClient, settings: Settings, local_engine: LocalEngine
) -> None:
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok", "engine": "ok"}

    unreachable = _unreachable_engine(settings)
    with TestClient(create_app(unreachable)) as engine_down:
        response = engine_down.get("/readyz")
        assert engine_down.get("/healthz").status_code == 200  # the process itself is fine
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"] == "ok" and checks["broker"] == "ok"
    # Which check failed, never the exception's text (hosts, ports, users): anyone may ask.
    assert checks["engine"] == "down: the engine is unreachable"
    assert str(unreachable.engine_url).rsplit(":", 1)[1] not in response.text

    dead = f"127.0.0.1:{free_port()}"
    everything_down = settings.model_copy(
        update={
            "database_url": f"postgresql+psycopg://fastslow@{dead}/fastslow?connect_timeout=2",
            "broker_url": f"redis://{dead}/0",
        }
    )
    with TestClient(create_app(everything_down, engine=local_engine)) as db_down:
        response = db_down.get("/readyz")
        samples = scrape(db_down)  # still served: this process's own series matter most then
    assert value(samples, "fastslow_database_metrics_up") == 0
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"] == "down: the database is unreachable"
    assert checks["broker"] == "down: the job queue is unreachable"
    assert checks["engine"] == "ok"
    assert dead.rsplit(":", 1)[1] not in response.text and "fastslow@" not in response.text


def test_request_ids(client: TestClient) -> None:
    generated = client.get("/healthz").headers["x-request-id"]
    assert len(generated) == 32 and generated != client.get("/healthz").headers["x-request-id"]
    assert (
        client.get("/healthz", headers={"X-Request-ID": "lb-7f3a.1"}).headers["x-request-id"]
        == "lb-7f3a.1"
    )
    # Only plain tokens are taken from callers (they end up in logs).
    sneaky = client.get("/healthz", headers={"X-Request-ID": "a b\nINFO fake"})
    assert sneaky.headers["x-request-id"] != "a b\nINFO fake"


@pytest.fixture
def json_logs(settings: Settings) -> Iterator[io.StringIO]:
    """This process's logging as `fastslow api` sets it up with FASTSLOW_LOG_FORMAT=json,
    written to a buffer; restored afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    config = logging_config(settings.model_copy(update={"log_format": "json"}), level="DEBUG")
    config["handlers"]["default"]["stream"] = buffer = io.StringIO()
    logging.config.dictConfig(config)
    try:
        yield buffer
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_json_logs_carry_request_ids_and_never_keys(
    client: TestClient, tenant: TenantKeys, json_logs: io.StringIO
) -> None:
    forged = "fsk_" + uuid.uuid4().hex + "_" + uuid.uuid4().hex
    calls = [
        client.get("/v1/models", headers=tenant.headers("member")),
        client.get("/v1/models", headers={"Authorization": f"Bearer {forged}"}),
        client.get("/api/v1/keys", headers={"Authorization": f"Bearer {tenant.member}"}),
        client.get("/api/v1/tenants", headers={"Authorization": f"Bearer {PLATFORM_KEY}"}),
        client.get("/api/v1/tenants", headers={"Authorization": "Basic dXNlcjpwYXNz"}),
    ]
    assert [c.status_code for c in calls] == [200, 401, 403, 200, 401]
    # Code that logs a credential by mistake is masked too.
    logging.getLogger("fastslow.test").warning("calling with %s", tenant.headers())

    text = json_logs.getvalue()
    records = [json.loads(line) for line in text.splitlines()]
    access = [r for r in records if r["logger"] == "fastslow.access"]
    assert [r["request_id"] for r in access] == [c.headers["x-request-id"] for c in calls]
    assert {r["route"] for r in access} == {"/v1/models", "/api/v1/keys", "/api/v1/tenants"}
    assert [r["status"] for r in access] == [200, 401, 403, 200, 401]
    for secret in (tenant.admin, tenant.member, forged, PLATFORM_KEY, "dXNlcjpwYXNz"):
        assert secret not in text
    assert "Bearer ***" in text


def test_api_processes_add_up_their_metrics(stack: Stack) -> None:
    """`fastslow api --workers 2`: each process counts its own requests, /metrics adds them
    up, and each logs JSON (uvicorn applies the logging config in every process)."""
    port = free_port()
    api = Process(
        "api-two-processes",
        [str(VENV_BIN / "fastslow"), "api", "--workers", "2", "--port", str(port)],
        {
            **stack.env,
            "FASTSLOW_ENGINE": "vllm",  # --workers needs it; no engine is called here
            "FASTSLOW_ENGINE_URL": f"http://127.0.0.1:{free_port()}",
            "FASTSLOW_LOG_FORMAT": "json",
        },
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_ok(f"{url}/healthz") or not api.alive, timeout=120, what="API")
        assert api.alive, api.log_tail()
        before = value(
            scrape(httpx.Client(base_url=url)), "fastslow_http_requests_total", **HEALTHZ
        )
        for _ in range(40):
            assert httpx.get(f"{url}/healthz").status_code == 200  # a new connection each
        after = value(scrape(httpx.Client(base_url=url)), "fastslow_http_requests_total", **HEALTHZ)
        assert after - before == 40
        records = [json.loads(line) for line in api.log_tail(100_000).splitlines() if line]
        started = {r["process"] for r in records if r["message"] == "Application startup complete."}
        assert len(started) == 2, records
    finally:
        api.stop()


def test_worker_metrics_and_job_logs(stack: Stack, client: TestClient, tenant: TenantKeys) -> None:
    port = free_port()
    worker = start_worker(
        stack,
        "worker-observability",
        queues="fast",
        FASTSLOW_WORKER_METRICS_PORT=str(port),
        FASTSLOW_LOG_FORMAT="json",
    )
    try:
        create_agent(client, tenant)
        job_id = client.post(
            "/api/v1/agents/support/evaluate", json={}, headers=tenant.headers()
        ).json()["id"]

        def status() -> str:
            job = client.get(f"/api/v1/jobs/{job_id}", headers=tenant.headers()).json()
            return str(job["status"])

        wait_until(lambda: status() == "failed", timeout=120, what="the job to fail")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
            samples = scrape(http)
        evaluate = {"kind": "evaluate", "outcome": "failed"}
        assert value(samples, "fastslow_worker_jobs_total", **evaluate) == 1
        assert value(samples, "fastslow_worker_job_duration_seconds_count", **evaluate) == 1
        assert value(samples, "fastslow_worker_jobs_running", kind="evaluate") == 0
        records = []
        for line in worker.log_tail(200_000).splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue  # celery's start-up banner is not a log record
        tagged = [r for r in records if r.get("job_id") == job_id]
        assert any(r["message"].startswith(f"job {job_id} failed") for r in tagged), tagged
        assert any("started" in r["message"] for r in tagged)
    finally:
        worker.stop()
