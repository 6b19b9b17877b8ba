"""Load benchmark: simulated users of several tenants chat (streamed and not) and rate for a
fixed time while the fast loop optimises one tenant's prompt on a worker and another tenant's
LoRA adapter is swapped twice; then every answer and rating the clients were given is looked
up in the database.

It starts its own API and worker processes (local engine, loopback only) on a fresh PostgreSQL
database at 127.0.0.1:5432 (SQLite when there is none) and a broker (`--broker-url`, default
the server-less SQLite transport in a temporary directory), and stops them at the end.

Modes: `ci` (60 s, 3 tenants x 3 users) and `long` (5 minutes, 4 tenants x 4 users); any
figure can be overridden.

Run: .venv/bin/python benchmarks/load_test.py [--mode ci|long] [--duration 60] [--tenants 3]
Prints a table and writes benchmarks/results/load_test-<mode>-<date>.json.

The clients are an asyncio + httpx driver (backend/simulation/traffic.py), not locust: every
call is kept with its completion id or Idempotency-Key so that the run can be checked against
the database row by row, streams are parsed to the last event, and the swap and the fast loop
run in the same process on a timeline. Locust would add gevent's monkey-patching (at odds with
torch and the database driver the same process uses) for none of that.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backend import migrate  # noqa: E402
from backend.simulation.load import LoadConfig, run_load  # noqa: E402

FASTSLOW = REPO / ".venv" / "bin" / "fastslow"
BASE_MODEL = os.environ.get(
    "FASTSLOW_BASE_MODEL", str(REPO / "data" / "models" / "SmolLM2-135M-Instruct")
)
MODES = {
    "ci": LoadConfig(duration_s=60, tenants=3, users_per_tenant=3),
    "long": LoadConfig(duration_s=300, tenants=4, users_per_tenant=4),
}


def database_url(tmp: Path) -> str:
    try:
        import psycopg

        name = f"fastslow_load_{uuid.uuid4().hex[:8]}"
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    except Exception:
        return f"sqlite:///{tmp / 'load.db'}"


def drop_database(url: str) -> None:
    if not url.startswith("postgresql"):
        return
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise SystemExit(f"{what} did not come up")


def healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=sorted(MODES), default="ci")
    parser.add_argument("--duration", type=float, help="seconds of load")
    parser.add_argument("--tenants", type=int)
    parser.add_argument("--users", type=int, help="simulated users per tenant")
    parser.add_argument("--max-tokens", type=int, help="answer length")
    parser.add_argument("--stream-share", type=float, help="share of streamed chats")
    parser.add_argument("--broker-url", help="Celery broker (default: SQLite transport)")
    parser.add_argument("--no-optimise", action="store_true", help="no fast loop during load")
    parser.add_argument("--no-swap", action="store_true", help="no adapter swap during load")
    args = parser.parse_args()

    base = MODES[args.mode]
    config = LoadConfig(
        duration_s=args.duration or base.duration_s,
        tenants=args.tenants or base.tenants,
        users_per_tenant=args.users or base.users_per_tenant,
        stream_share=base.stream_share if args.stream_share is None else args.stream_share,
        max_tokens=args.max_tokens or base.max_tokens,
        optimise=not args.no_optimise,
        swap=not args.no_swap,
    )

    with tempfile.TemporaryDirectory(prefix="fastslow-load-") as tmp_dir:
        tmp = Path(tmp_dir)
        db_url = database_url(tmp)
        migrate.upgrade(db_url)
        platform_key = "load-" + secrets.token_hex(16)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("FASTSLOW_")},
            "FASTSLOW_DATA_DIR": str(tmp / "data"),
            "FASTSLOW_DATABASE_URL": db_url,
            "FASTSLOW_BROKER_URL": args.broker_url or f"sqla+sqlite:///{tmp / 'broker.db'}",
            "FASTSLOW_BASE_MODEL": BASE_MODEL,
            "FASTSLOW_PLATFORM_KEY": platform_key,
            "FASTSLOW_ENGINE": "local",
        }
        port = free_port()
        logs = tmp / "logs"
        logs.mkdir()
        api = subprocess.Popen(
            [str(FASTSLOW), "api", "--port", str(port)],
            env=env,
            stdout=(logs / "api.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        worker_log = logs / "worker.log"
        worker = subprocess.Popen(
            [str(FASTSLOW), "worker", "--queues", "fast"],
            env=env,
            stdout=worker_log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: healthy(f"{url}/healthz"), 300, "the API")
            wait_for(lambda: "ready." in worker_log.read_text(errors="replace"), 300, "the worker")
            started = time.perf_counter()
            result = run_load(
                url, platform_key, db_url, config, base_model=Path(BASE_MODEL), work_dir=tmp
            )
            wall = time.perf_counter() - started
        finally:
            worker.kill()
            api.terminate()
            api.wait(timeout=60)
            worker.wait(timeout=60)
            drop_database(db_url)
    report(args.mode, config, result, db_url, wall, args.broker_url)


def report(
    mode: str,
    config: LoadConfig,
    result: dict[str, Any],
    db_url: str,
    wall_s: float,
    broker_url: str | None,
) -> None:
    summary = result["summary"]
    users = config.tenants * config.users_per_tenant
    print(
        f"\nload {mode}: {config.tenants} tenants x {config.users_per_tenant} users = {users} "
        f"clients, {summary['duration_s']} s, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, local engine, "
        f"{'PostgreSQL' if db_url.startswith('postgresql') else 'SQLite'}"
    )
    print(f"{'':10}{'sent':>7}{'ok':>7}{'p50 s':>9}{'p95 s':>9}{'p99 s':>9}{'max s':>9}")
    for kind, entry in summary["requests"].items():
        lat = entry["latency_s"]
        cells = "".join(f"{lat[k] if lat[k] is not None else '-':>9}" for k in lat)
        print(f"{kind:10}{entry['sent']:>7}{entry['ok']:>7}{cells}")
    first = summary["requests"]["stream"]["first_token_s"]
    print(f"stream time to first token: p50 {first['p50']} s, p95 {first['p95']} s")
    print(
        f"5xx: {summary['server_errors']}, no answer: {summary['no_response']}, "
        f"lost rollouts: {result['lost']['rollouts']}, lost feedback: {result['lost']['feedback']}"
        f", answers/s: {summary['answers_per_s']}"
    )
    for event in result["events"]:
        print(
            f"  t={event['at_s']:>6}s  {event['what']}: {event['status']} {event['took_s'] or ''}"
        )
    print(f"  fast loop: {result['optimisation']}")

    results = REPO / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    out = results / f"load_test-{mode}-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                "stack": {
                    "engine": "local",
                    "database": "postgresql" if db_url.startswith("postgresql") else "sqlite",
                    "broker": (broker_url or "sqla+sqlite").split(":")[0],
                },
                "wall_s": round(wall_s, 1),
                **result,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
