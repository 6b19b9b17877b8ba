"""Faults during traffic: the database restarts, the broker fills up or goes away. Simulated
users of two tenants keep chatting (streamed and not) and rating the whole time; clients must
see only successes or 503 with `Retry-After`, every answer and rating a client was given must
be in the database afterwards, and the system recovers by itself.

Each fault gets a PostgreSQL or Redis server of its own (tests/faults/support.py): the
shared servers are never stopped. (Killed workers: tests/faults/test_*_loop_faults.py; a vLLM
restart: tests/faults/test_vllm_faults.py.)"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psutil
import pytest

from backend import migrate
from backend.simulation.traffic import (
    SimTenant,
    Traffic,
    TrafficReport,
    create_tenants,
)
from tests.conftest import PLATFORM_KEY, Stack, start_api
from tests.faults.support import (
    Background,
    PrivatePostgres,
    PrivateRedis,
    assert_nothing_lost,
    describe,
)
from tests.support import VENV_BIN, Process, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    server.start()
    yield server
    server.destroy()


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    yield server
    server.destroy()


def test_postgres_restart_during_traffic(stack: Stack, private_postgres: PrivatePostgres) -> None:
    url = private_postgres.create_database("fastslow")
    migrate.upgrade(url)
    api, base = start_api(stack, "api-pg-restart", FASTSLOW_DATABASE_URL=url)
    try:
        tenants = create_tenants(base, PLATFORM_KEY, 2, max_tokens=16)
        admin = tenants[0].headers("admin")
        prompts = f"{base}/api/v1/agents/support/prompts"
        created = httpx.post(
            prompts, json={"instructions": "Be brief.", "activate": False}, headers=admin
        )
        assert created.status_code == 201, created.text
        traffic = Traffic(base, tenants, users_per_tenant=3, max_tokens=8, think_s=0.1)
        with Background(traffic) as clients:
            wait_until(lambda: clients.ok_since(0) >= 10, timeout=90, what="traffic to flow")
            down_at = clients.now()
            private_postgres.stop("fast")  # every connection of the pool is cut
            # An admin's activation in the outage is refused whole, not half done.
            activation = httpx.post(f"{prompts}/2/activate", json={}, headers=admin)
            assert activation.status_code == 503 and activation.headers["retry-after"]
            # Down until the simulated users have met the outage too (a request in flight
            # can outlast a short one, so a fixed pause would not always be seen).
            wait_until(
                lambda: clients.refused_since(down_at) >= 1, timeout=60, what="a client's 503"
            )
            time.sleep(2)
            private_postgres.start()
            up_at = clients.now()
            # Recovered without anyone touching the API: successes again, ratings included.
            wait_until(lambda: clients.ok_since(up_at) >= 10, timeout=90, what="recovery")
        assert api.alive
        agent = httpx.get(f"{base}/api/v1/agents/support", headers=admin).json()
        assert agent["live_prompt_version"] == 1
        history = httpx.get(f"{base}/api/v1/agents/support/activations", headers=admin).json()
        assert len(history) == 1, history
    finally:
        api.stop()

    report = traffic.report
    unexpected = report.unexpected(faults=True)
    assert not unexpected, describe(unexpected)
    refused = [c for c in report.calls if c.status == 503]
    assert refused, "the outage was seen by clients (else this test tested nothing)"
    # Refused only around the outage: the API recovered by itself.
    assert all(c.started_s + c.latency_s >= down_at and c.started_s <= up_at + 5 for c in refused)
    assert_nothing_lost(url, report)
    summary = report.summary()
    print("postgres restart:", summary)


@contextlib.contextmanager
def paused(worker: Process) -> Iterator[None]:
    """The worker's pool processes stopped (SIGSTOP): tasks are received but not finished."""
    children = psutil.Process(worker.popen.pid).children(recursive=True)
    assert children, "a prefork worker has pool processes"
    for child in children:
        child.suspend()
    try:
        yield
    finally:
        for child in children:
            child.resume()


_TASK_EVENT = re.compile(r"Task [\w.]+\[([0-9a-f-]+)\] (received|succeeded|raised|retry|ignored)")


def held_tasks(worker_log: str) -> set[str]:
    """Ids of the tasks the worker received and has not finished (so not acknowledged: the
    tasks are acks_late)."""
    held: set[str] = set()
    for task_id, event in _TASK_EVENT.findall(worker_log):
        if event == "received":
            held.add(task_id)
        else:
            held.discard(task_id)
    return held


def _optimize(base: str, tenant: SimTenant) -> httpx.Response:
    return httpx.post(
        f"{base}/api/v1/agents/{tenant.agent}/optimize", headers=tenant.headers("admin"), timeout=30
    )


def _jobs(base: str, tenant: SimTenant) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{base}/api/v1/jobs", params={"kind": "optimize"}, headers=tenant.headers("admin")
    )
    response.raise_for_status()
    jobs: list[dict[str, Any]] = response.json()
    return jobs


def _triggered_and_started(base: str, tenant: SimTenant, after: set[str]) -> bool:
    """A job beat's fast-loop trigger started (not an admin) that a worker picked up and ran
    to its end (it fails at once for want of data, once the worker has imported the fast loop:
    until then the agent's optimize lock is held)."""
    return any(
        job["id"] not in after
        and job["params"].get("trigger") != "admin"
        and job["started_at"] is not None
        and job["finished_at"] is not None
        for job in _jobs(base, tenant)
    )


def test_full_or_stopped_broker_loses_no_rating_and_the_fast_loop_catches_up(
    stack: Stack, private_postgres: PrivatePostgres, private_redis: PrivateRedis
) -> None:
    url = private_postgres.create_database("fastslow")
    migrate.upgrade(url)
    env = {
        "FASTSLOW_DATABASE_URL": url,
        "FASTSLOW_BROKER_URL": private_redis.url,
        "FASTSLOW_FAST_LOOP_CHECK_INTERVAL_S": "1",
        # The worker's "received"/"succeeded" lines tell which tasks it holds.
        "FASTSLOW_LOG_CALM": "false",
    }
    beat = Process("beat-broker-fault", [str(VENV_BIN / "fastslow"), "beat"], {**stack.env, **env})
    worker = Process(
        "worker-broker-fault",
        [str(VENV_BIN / "fastslow"), "worker", "--queues", "fast,maintenance"],
        {**stack.env, **env},
    )
    api, base = start_api(stack, "api-broker-fault", **env)
    try:
        wait_until(lambda: worker.logged("ready."), timeout=120, what="the worker")
        # The loop is due after 3 new ratings; a run then fails at once for want of data
        # (min_examples), which is all this test needs: the trigger fired and a worker ran it.
        (tenant,) = create_tenants(
            base,
            PLATFORM_KEY,
            1,
            max_tokens=16,
            fast_loop={"pinned": False, "min_new_feedback": 3, "min_examples": 10_000},
        )

        def chat_and_rate(ratings: int = 3) -> TrafficReport:
            """Users chat and rate until `ratings` ratings were accepted."""
            traffic = Traffic(base, [tenant], users_per_tenant=3, max_tokens=8, think_s=0.05)
            with Background(traffic, limit_s=120):
                wait_until(
                    lambda: len(traffic.report.feedback_keys) >= ratings,
                    timeout=120,
                    what=f"{ratings} ratings",
                )
            return traffic.report

        # 1. Full: every write to Redis is refused. Chat and ratings do not need the broker.
        # It fills while the worker holds a task it has not acknowledged yet (its pool process
        # is paused), so the acknowledgement itself is refused: the worker must live through
        # that, not stop.
        wait_until(
            lambda: " received" in worker.log_tail(100_000), timeout=120, what="beat's first tick"
        )
        with paused(worker):
            # Held on two looks a second apart: a task whose result was on its way when the
            # pool stopped is acknowledged in between.
            for _ in range(2):
                wait_until(
                    lambda: bool(held_tasks(worker.log_tail(100_000))),
                    timeout=60,
                    what="a task in the paused worker's hands",
                )
                time.sleep(1)
            private_redis.fill()
        full = chat_and_rate()
        refused = _optimize(base, tenant)
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"]
        # Nothing half-started: the job that could not be queued is failed, its lock freed.
        (failed,) = [j for j in _jobs(base, tenant) if j["params"]["trigger"] == "admin"]
        assert failed["status"] == "failed" and "queue" in failed["error"]
        time.sleep(3)  # beat's ticks hit the full broker too
        jobs = _jobs(base, tenant)
        assert all(j["status"] == "failed" and j["started_at"] is None for j in jobs), jobs

        assert worker.alive and beat.alive, worker.log_tail()
        # Room again: beat's next tick reaches a worker, which finds the agent due.
        private_redis.drain()
        seen = {j["id"] for j in jobs}
        wait_until(
            lambda: _triggered_and_started(base, tenant, seen), timeout=60, what="catch-up (full)"
        )
        seen = {job["id"] for job in _jobs(base, tenant)}

        # 2. Down: the broker process is gone, then a new, empty one comes up on its port.
        private_redis.stop()
        down = chat_and_rate()
        refused = _optimize(base, tenant)
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"]
        private_redis.start()
        wait_until(
            lambda: _triggered_and_started(base, tenant, seen), timeout=90, what="catch-up (down)"
        )
        assert api.alive and worker.alive and beat.alive
    finally:
        api.stop()
        worker.kill()
        worker.stop()
        beat.stop()

    for report in (full, down):
        unexpected = report.unexpected(faults=False)
        assert not unexpected, describe(unexpected)
        assert len(report.feedback_keys) >= 3
        assert_nothing_lost(url, report)
    print("broker full:", full.summary())
    print("broker down:", down.summary())
