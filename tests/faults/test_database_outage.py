"""Storing an answer while the database is unreachable. The recorder retries through a short
outage (a restart, a fail-over), so the answer is kept; when the outage outlasts the retries, a
non-streamed chat is a 503 with `Retry-After`, and a streamed one, whose 200 was sent already,
says so in-band. Never a 500, never a stream cut without a word.

(A real PostgreSQL restart under traffic: tests/faults/test_platform_faults.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from backend.app import create_app
from backend.chat.service import make_recorder
from backend.config import Settings
from backend.db import Database
from backend.engines.local import LocalEngine
from backend.rollouts.models import Rollout
from backend.runtime.agent import AgentRuntime
from tests.backend.helpers import chat, create_agent, sse_events
from tests.conftest import TenantKeys


class Outage:
    """The real database, but the next `failures` commits fail as a lost connection does."""

    def __init__(self, database: Database, failures: int) -> None:
        self.database = database
        self.failures = failures
        self.attempts = 0

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.database.session() as session:
            self.attempts += 1
            if self.failures > 0:
                self.failures -= 1

                def lost() -> None:
                    raise OperationalError(
                        "COMMIT", {}, ConnectionError("server closed the connection")
                    )

                session.commit = lost  # type: ignore[method-assign]
            yield session


def _rollouts(database: Database, tenant: TenantKeys) -> int:
    with database.session() as session:
        count = session.scalar(
            select(func.count()).select_from(Rollout).where(Rollout.tenant_id == tenant.tenant_id)
        )
    return int(count or 0)


@pytest.fixture
def client(settings: Settings, local_engine: LocalEngine) -> Iterator[TestClient]:
    with TestClient(create_app(settings, engine=local_engine)) as client:
        yield client


def _use_recorder(client: TestClient, outage: Outage, retry_s: float) -> None:
    """The app's runtime, storing rollouts through `outage`."""
    app = cast(FastAPI, client.app)
    recorder = make_recorder(cast(Database, outage), retry_s=retry_s)
    app.state.runtime = AgentRuntime(app.state.runtime.engine, recorder)


def test_a_short_outage_loses_no_answer(
    client: TestClient, tenant: TenantKeys, database: Database
) -> None:
    create_agent(client, tenant)
    outage = Outage(database, failures=2)
    _use_recorder(client, outage, retry_s=10)
    for stream in (False, True):
        outage.failures = 2
        response = chat(client, tenant, "Where is my order #12345?", stream=stream)
        assert response.status_code == 200, response.text
        if stream:
            events = sse_events(response.text)
            assert events[-1] == "[DONE]" and not any("error" in e for e in events[:-1])
    assert outage.attempts == 6, "two failed commits, then stored, each time"
    assert _rollouts(database, tenant) == 2


def test_a_long_outage_is_a_503_or_an_in_band_error(
    client: TestClient, tenant: TenantKeys, database: Database
) -> None:
    create_agent(client, tenant)
    _use_recorder(client, Outage(database, failures=1_000), retry_s=0.5)
    refused = chat(client, tenant, "Where is my order #12345?")
    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"]
    assert refused.json()["error"]["code"] == "unavailable"

    streamed = chat(client, tenant, "Where is my order #12345?", stream=True)
    assert streamed.status_code == 200  # sent before the answer was complete
    events = sse_events(streamed.text)
    (error,) = [e for e in events if isinstance(e, dict) and "error" in e]
    assert error["error"]["code"] == "unavailable"
    assert "[DONE]" not in events, "the client must not take this answer as complete"
    assert _rollouts(database, tenant) == 0
