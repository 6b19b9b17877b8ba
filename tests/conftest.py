"""Test fixtures: real databases, a real broker, the real base model, real processes.

The stack is chosen by FASTSLOW_TEST_STACK:
- `postgres` (default; CI): PostgreSQL (a fresh database per run) and a Redis broker.
- `sqlite`: the embedded default: a SQLite file and the server-less SQLite Celery transport.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.engine import make_url

from backend import migrate
from backend.agents.models import Agent
from backend.app import create_app
from backend.base_checkpoint import is_prepared, prepare_base_model
from backend.config import DEFAULT_BASE_MODEL, Settings
from backend.db import Database
from backend.engines.local import LocalEngine
from backend.jobs.models import Job, JobStatus
from backend.tenants.models import Role
from backend.tenants.service import create_api_key, create_tenant
from tests.support import ARTIFACTS, REPO, VENV_BIN, Process, free_port, http_ok, wait_until

STACK = os.environ.get("FASTSLOW_TEST_STACK", "postgres")
POSTGRES_URL = os.environ.get(
    "FASTSLOW_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("FASTSLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
PLATFORM_KEY = "platform-test-key-" + uuid.uuid4().hex
_SESSION_DATABASE: list[str] = []  # the URL of the session's database, once created


def pytest_report_header() -> str:
    return f"fastslow test stack: {STACK}"


@pytest.fixture(scope="session")
def base_model_dir() -> Path:
    """The real base model, prepared once into the repo's data dir and reused across runs."""
    configured = os.environ.get("FASTSLOW_TEST_BASE_MODEL")
    if configured:
        return Path(configured)
    settings = Settings(data_dir=REPO / "data", base_model=DEFAULT_BASE_MODEL)
    if not is_prepared(settings.base_model_path):
        prepare_base_model(settings)
    return settings.base_model_path


def _postgres_database(name: str) -> str:
    url = make_url(POSTGRES_URL)
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False)


def _drop_postgres_database(name: str) -> None:
    url = make_url(POSTGRES_URL)
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass(frozen=True)
class Stack:
    """The settings every process of this test run shares (as FASTSLOW_* variables too)."""

    settings: Settings
    env: dict[str, str]


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, base_model_dir: Path) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("data")
    db_name = f"fastslow_test_{uuid.uuid4().hex[:10]}"
    if STACK == "postgres":
        database_url = _postgres_database(db_name)
        broker_url = REDIS_URL
        redis.Redis.from_url(REDIS_URL).flushdb()
    elif STACK == "sqlite":
        database_url = f"sqlite:///{data_dir / 'fastslow.db'}"
        broker_url = f"sqla+sqlite:///{data_dir / 'broker.db'}"
    else:
        raise pytest.UsageError(f"unknown FASTSLOW_TEST_STACK {STACK!r}")
    env = {
        "FASTSLOW_DATA_DIR": str(data_dir),
        "FASTSLOW_DATABASE_URL": database_url,
        "FASTSLOW_BROKER_URL": broker_url,
        "FASTSLOW_BASE_MODEL": str(base_model_dir),
        "FASTSLOW_PLATFORM_KEY": PLATFORM_KEY,
        "FASTSLOW_ENGINE": "local",
        # Tests keep answers short; the cap keeps a wrong test from generating for minutes.
        "FASTSLOW_DEFAULT_MAX_TOKENS": "64",
    }
    os.environ.update(env)  # for code under test that reads get_settings()
    _SESSION_DATABASE[:] = [database_url]
    migrate.upgrade(database_url)
    settings = Settings()
    yield Stack(settings, env)
    if STACK == "postgres":
        _drop_postgres_database(db_name)


@pytest.fixture(scope="session")
def settings(stack: Stack) -> Settings:
    return stack.settings


@pytest.fixture(scope="session")
def database(settings: Settings) -> Iterator[Database]:
    db = Database(settings.database_url)
    yield db
    db.dispose()


@pytest.fixture(scope="module", autouse=True)
def quiet_agents_after_each_module() -> Iterator[None]:
    """The database lives for the whole session: agents a module leaves behind with ratings
    would become due for the fast loop (after `max_wait_minutes`) and fill a later module's
    worker with their runs. Pin them and cancel what they queued once the module ends."""
    yield
    if not _SESSION_DATABASE:
        return  # no test has created the session's database yet
    database = Database(_SESSION_DATABASE[0])
    try:
        _quiet_agents(database)
    finally:
        database.dispose()


def _quiet_agents(database: Database) -> None:
    with database.session() as session:
        for agent in session.scalars(select(Agent)).unique():
            agent.fast_loop = {**(agent.fast_loop or {}), "pinned": True}
        for job in session.scalars(select(Job).where(Job.status == JobStatus.QUEUED)):
            job.status = JobStatus.CANCELLED
            job.cancel_requested = True
            job.lock_key = None
            job.error = "cancelled: its test module ended"
        for job in session.scalars(select(Job).where(Job.status == JobStatus.RUNNING)):
            job.cancel_requested = True  # a worker still on it stops at its next safe point
        session.commit()


@pytest.fixture(scope="session")
def local_engine(base_model_dir: Path) -> LocalEngine:
    """The real base model in-process, loaded once for the whole run."""
    return LocalEngine(base_model_dir, base_model_dir.name)


@pytest.fixture(scope="session")
def app_client(settings: Settings, local_engine: LocalEngine) -> Iterator[TestClient]:
    """The real app (real database, real model) called in-process."""
    with TestClient(create_app(settings, engine=local_engine)) as client:
        yield client


@dataclass(frozen=True)
class TenantKeys:
    tenant_id: uuid.UUID
    name: str
    admin: str
    member: str

    def headers(self, role: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin if role == 'admin' else self.member}"}


@pytest.fixture
def new_tenant(database: Database) -> Callable[[], TenantKeys]:
    """Make a fresh tenant with an admin and a member key (tests never share tenants)."""

    def make() -> TenantKeys:
        name = f"t-{uuid.uuid4().hex[:12]}"
        with database.session() as session:
            tenant, admin = create_tenant(session, name=name)
            member = create_api_key(session, tenant_id=tenant.id, role=Role.MEMBER, name="m")
        return TenantKeys(tenant.id, name, admin.plaintext, member.plaintext)

    return make


@pytest.fixture
def tenant(new_tenant: Callable[[], TenantKeys]) -> TenantKeys:
    return new_tenant()


@pytest.fixture
def other_tenant(new_tenant: Callable[[], TenantKeys]) -> TenantKeys:
    return new_tenant()


@pytest.fixture(scope="session", autouse=True)
def _artifacts_dir() -> None:
    ARTIFACTS.mkdir(exist_ok=True)


def start_api(stack: Stack, name: str = "api", **env: str) -> tuple[Process, str]:
    """A real `fastslow api` process on a free port; returns it and its base URL."""
    port = free_port()
    api = Process(
        name,
        [str(VENV_BIN / "fastslow"), "api", "--port", str(port)],
        {**stack.env, **env},
    )
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_ok(f"{url}/healthz") or not api.alive, timeout=120, what="the API")
    assert api.alive, api.log_tail()
    return api, url


def start_worker(
    stack: Stack, name: str = "worker", *, queues: str | None = None, **env: str
) -> Process:
    """A real Celery worker process (`fastslow worker`) on the run's broker."""
    args = [str(VENV_BIN / "fastslow"), "worker"] + (["--queues", queues] if queues else [])
    worker = Process(name, args, {**stack.env, **env})
    try:
        # Anywhere in the log: queued tasks it takes at once can push "ready." out of a tail.
        wait_until(
            lambda: worker.logged("ready.") or not worker.alive, timeout=120, what="the worker"
        )
        assert worker.alive, worker.log_tail()
    except BaseException:
        worker.stop()  # never left running behind a failed test, taking later tests' tasks
        raise
    return worker


@pytest.fixture(scope="session")
def api_server(stack: Stack) -> Iterator[str]:
    api, url = start_api(stack)
    yield url
    api.stop()


class VllmServer:
    """A real vLLM OpenAI server (the CPU build) for the base model, on a fixed port, which a
    test may stop and start again (engine restarts)."""

    START_TIMEOUT_S = 600

    def __init__(self, base_model_dir: Path) -> None:
        # Started with an API key, as in production: every test on it goes through the key.
        self.api_key = "engine-" + uuid.uuid4().hex
        # Fewer adapter slots than the tests use adapters, so "more live adapters than
        # --max-loras" is exercised whenever several agents are served.
        self.settings = Settings(
            base_model=str(base_model_dir),
            vllm_python=REPO / ".venv-vllm" / "bin" / "python",
            vllm_max_loras=2,
            vllm_max_cpu_loras=3,
            engine_api_key=SecretStr(self.api_key),
        )
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: Process | None = None

    def start(self) -> None:
        from backend.engines.vllm_server import vllm_launch

        if not self.settings.vllm_python.exists():
            pytest.fail("no vLLM environment: run `make vllm-env` (make test does)")
        launch = vllm_launch(self.settings, host="127.0.0.1", port=self.port, gpu=False)
        self.process = process = Process("vllm", launch.argv, launch.env)
        wait_until(
            lambda: http_ok(f"{self.url}/health") or not process.alive,
            timeout=self.START_TIMEOUT_S,
            interval=1,
            what="vLLM to start",
        )
        assert process.alive, f"vLLM exited:\n{process.log_tail()}"

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.stop()


@pytest.fixture(scope="session")
def vllm_server(base_model_dir: Path) -> Iterator[VllmServer]:
    """The run's vLLM server, started on first use."""
    server = VllmServer(base_model_dir)
    server.start()
    yield server
    if server.process is not None:
        server.process.stop()
