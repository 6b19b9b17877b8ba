"""A load scenario against a running platform: simulated users of several tenants chat
(streamed and not) and rate for a fixed time while, at the same time, the fast loop optimises
one tenant's prompt on a worker and another tenant's live LoRA adapter is swapped twice.

Afterwards the database is checked against what the clients were given (no answer without
its rollout, no accepted rating without its feedback row). The load benchmark
(benchmarks/load_test.py) and the load test (tests/system/test_load.py) both run this.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

import backend.models  # noqa: F401  (every model mapped before the first query)
from backend.adapters.synthetic import make_lora
from backend.db import Database
from backend.simulation.traffic import (
    SimTenant,
    Traffic,
    TrafficReport,
    activate_adapter,
    create_tenants,
    missing_records,
    stored_counts,
    upload_adapter,
)

# Ratings the optimised tenant needs before its fast loop is started (its agent asks for 4
# usable examples, more make the split less lopsided). A warm-up gives it most of them before
# the measured window; without enough by 2/3 of the run it is started anyway, and its job then
# reports that it had too little to learn from.
RATINGS_BEFORE_OPTIMISING = 6


@dataclass(frozen=True)
class LoadConfig:
    duration_s: float = 60.0
    tenants: int = 3
    users_per_tenant: int = 3
    stream_share: float = 0.5
    max_tokens: int = 16
    think_s: float = 0.2
    optimise: bool = True  # run the fast loop for tenant 0 while the load runs
    swap: bool = True  # swap the last tenant's adapter twice while the load runs
    optimise_budget: int = 16
    seed: int = 0


@dataclass
class Event:
    at_s: float
    what: str
    status: int | str
    took_s: float | None = None
    detail: str = ""


@dataclass
class Scenario:
    """The side actions taken while the traffic runs, and what came of them."""

    t0: float = field(default_factory=time.perf_counter)
    events: list[Event] = field(default_factory=list)
    job: dict[str, Any] = field(default_factory=dict)

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def record(
        self, what: str, status: int | str, took_s: float | None = None, detail: str = ""
    ) -> None:
        self.events.append(Event(round(self.now(), 2), what, status, took_s, detail[:300]))


def _job(base_url: str, tenant: SimTenant, job_id: str) -> dict[str, Any]:
    response = httpx.get(f"{base_url}/api/v1/jobs/{job_id}", headers=tenant.headers("admin"))
    response.raise_for_status()
    job: dict[str, Any] = response.json()
    return job


def run_load(
    base_url: str,
    platform_key: str,
    database_url: str,
    config: LoadConfig,
    *,
    base_model: Path,
    work_dir: Path,
) -> dict[str, Any]:
    """Run the scenario; returns the figures (JSON-ready). Needs a worker on the `fast` queue
    for the optimisation to run; without one the job stays queued (reported as such)."""
    tenants = create_tenants(
        base_url,
        platform_key,
        config.tenants,
        max_tokens=max(config.max_tokens, 16),
        # Started by hand below, not by beat; promotes what it finds (a prompt swap under load).
        fast_loop={
            "min_new_feedback": 100_000,
            "min_examples": 4,
            "budget": config.optimise_budget,
            "max_tokens": 16,
            "margin": 0.0,
        },
        seed=config.seed,
    )
    optimised, swapped = tenants[0], tenants[-1]
    versions: list[int] = []
    if config.swap:
        for seed in (1, 2):
            lora = make_lora(base_model, work_dir / f"lora-{seed}", seed=seed)
            versions.append(upload_adapter(base_url, swapped, lora, note="load test"))

    # Warm-up, not measured: the optimised tenant's users ask once each (at the same time) and
    # rate, so that its agent has a history to learn from when the window starts.
    warm_up = Traffic(
        base_url,
        [optimised],
        users_per_tenant=RATINGS_BEFORE_OPTIMISING + 2 if config.optimise else 0,
        max_tokens=config.max_tokens,
        think_s=0,
        turns=1,
        seed=config.seed + 1,
    ).run(config.duration_s)
    traffic = Traffic(
        base_url,
        tenants,
        users_per_tenant=config.users_per_tenant,
        stream_share=config.stream_share,
        max_tokens=config.max_tokens,
        think_s=config.think_s,
        seed=config.seed,
    )
    scenario = Scenario()
    clients = threading.Thread(target=traffic.run, args=(config.duration_s,))
    clients.start()
    try:
        _act(base_url, config, traffic, scenario, optimised, swapped, versions, warm_up)
    finally:
        clients.join()
    if scenario.job:
        job = _job(base_url, optimised, scenario.job["id"])
        scenario.job.update(
            status_at_end=job["status"], step=job["step"], total=job["total"], error=job["error"]
        )
        scenario.job["result"] = job["result"].get("reason")

    live: dict[str, dict[str, int | None]] = {}
    for tenant in tenants:
        agent = httpx.get(
            f"{base_url}/api/v1/agents/{tenant.agent}", headers=tenant.headers("admin")
        ).json()
        live[tenant.name] = {
            "prompt": agent["live_prompt_version"],
            "adapter": agent["live_adapter_version"],
        }

    everything = TrafficReport(calls=[*warm_up.calls, *traffic.report.calls])
    database = Database(database_url)
    try:
        with database.session() as session:
            missing = missing_records(session, everything)
            stored = stored_counts(session, tenants)
    finally:
        database.dispose()
    report = traffic.report
    per_tenant = {  # warm-up included: the database holds it too
        t.name: {
            "answers_received": sum(
                1 for c in everything.calls if c.tenant == t.name and c.ok and c.completion_id
            ),
            "ratings_accepted": sum(
                1 for c in everything.calls if c.tenant == t.name and c.ok and c.feedback_key
            ),
            "in_database": stored[t.name],
        }
        for t in tenants
    }
    return {
        "config": asdict(config),
        "summary": report.summary(),
        "warm_up": {
            "answers_received": len(warm_up.completion_ids),
            "ratings_accepted": len(warm_up.feedback_keys),
        },
        "unexpected": [asdict(c) for c in report.unexpected()[:20]],
        "lost": {"rollouts": len(missing["rollouts"]), "feedback": len(missing["feedback"])},
        "lost_ids": {k: v[:20] for k, v in missing.items()},
        "per_tenant": per_tenant,
        "events": [asdict(e) for e in scenario.events],
        "optimisation": scenario.job,
        "adapter_versions": versions,
        "live_after": live,
        "optimised_tenant": optimised.name,
        "swapped_tenant": swapped.name,
    }


def _act(
    base_url: str,
    config: LoadConfig,
    traffic: Traffic,
    scenario: Scenario,
    optimised: SimTenant,
    swapped: SimTenant,
    versions: list[int],
    warm_up: TrafficReport,
) -> None:
    """The side actions, at their times: start the fast loop once the tenant has ratings to
    learn from; swap the adapter at 1/5 and at 1/2 of the run (in a thread of its own: an
    activation waits for the engine to load and probe the adapter); watch the job."""
    end = config.duration_s

    def swap() -> None:
        for at, version in zip((end / 5, end / 2), versions, strict=False):
            time.sleep(max(0.0, at - scenario.now()))
            began = time.perf_counter()
            response = activate_adapter(base_url, swapped, version)
            took = round(time.perf_counter() - began, 3)
            scenario.record(f"adapter v{version} activated", response.status_code, took)

    swapper = threading.Thread(target=swap)
    swapper.start()
    started = not config.optimise
    while scenario.now() < end:
        ratings = len(warm_up.feedback_keys) + sum(
            1
            for c in list(traffic.report.calls)
            if c.tenant == optimised.name and c.ok and c.feedback_key
        )
        if not started and (ratings >= RATINGS_BEFORE_OPTIMISING or scenario.now() > 2 * end / 3):
            started = True
            response = httpx.post(
                f"{base_url}/api/v1/agents/{optimised.agent}/optimize",
                headers=optimised.headers("admin"),
                timeout=60,
            )
            scenario.record("fast loop started", response.status_code, detail=response.text)
            if response.status_code == 202:
                scenario.job = {"id": response.json()["id"], "started_at_s": scenario.now()}
        if scenario.job and "running_at_s" not in scenario.job:
            job = _job(base_url, optimised, scenario.job["id"])
            if job["status"] != "queued":
                scenario.job["running_at_s"] = round(scenario.now(), 2)
        time.sleep(0.5)
    if scenario.job:
        job = _job(base_url, optimised, scenario.job["id"])
        scenario.job.update(status_when_load_ended=job["status"], step_when_load_ended=job["step"])
    swapper.join()
