"""Load on the real stack (API server process, worker process, the run's database and broker):
simulated users of three tenants chat (streamed and not) and rate for about a minute while the
fast loop optimises one tenant's prompt and another tenant's adapter is swapped twice. No
client may see a 5xx, and every answer and rating a client was given must be in the database.

The longer run with the figures is benchmarks/load_test.py; this is its short CI mode."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.simulation.load import LoadConfig, run_load
from tests.conftest import PLATFORM_KEY, Stack, start_worker
from tests.support import ARTIFACTS

pytestmark = pytest.mark.slow

CONFIG = LoadConfig(duration_s=45, tenants=3, users_per_tenant=3, max_tokens=12)


@pytest.fixture
def worker(stack: Stack) -> Iterator[None]:
    process = start_worker(stack, "worker-load", queues="fast")
    yield
    process.kill()  # the optimisation may still be running; its job is of no further use
    process.stop()


def test_load_with_fast_loop_and_adapter_swap(
    stack: Stack, api_server: str, worker: None, base_model_dir: Path, tmp_path: Path
) -> None:
    result = run_load(
        api_server,
        PLATFORM_KEY,
        stack.settings.database_url,
        CONFIG,
        base_model=base_model_dir,
        work_dir=tmp_path,
    )
    (ARTIFACTS / "load_test.json").write_text(json.dumps(result, indent=2))
    summary = result["summary"]

    assert summary["server_errors"] == 0, result["unexpected"]
    assert not result["unexpected"], result["unexpected"]
    assert result["lost"] == {"rollouts": 0, "feedback": 0}, result["lost_ids"]
    assert summary["ratings_abandoned"] == 0
    requests = summary["requests"]
    assert requests["chat"]["ok"] > 0 and requests["stream"]["ok"] > 0
    assert requests["feedback"]["ok"] > 0
    # The database holds at least what the clients were given, tenant by tenant.
    for figures in result["per_tenant"].values():
        assert figures["in_database"]["rollouts"] >= figures["answers_received"]
        assert figures["in_database"]["feedback"] == figures["ratings_accepted"]

    # The fast loop ran on the worker during the load ...
    events = {e["what"]: e for e in result["events"]}
    assert events["fast loop started"]["status"] == 202
    assert "running_at_s" in result["optimisation"], result["optimisation"]
    assert result["optimisation"]["status_at_end"] in ("running", "succeeded"), result[
        "optimisation"
    ]
    # ... and the adapter was swapped twice under load (which answers each version served
    # depends on how long a load-and-probe takes on a busy machine: the JSON has the counts).
    v1, v2 = result["adapter_versions"]
    assert events[f"adapter v{v1} activated"]["status"] == 200
    assert events[f"adapter v{v2} activated"]["status"] == 200
    assert result["live_after"][result["swapped_tenant"]]["adapter"] == v2
