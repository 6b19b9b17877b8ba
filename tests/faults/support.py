"""Helpers of the fault tests: PostgreSQL and Redis servers of a test's own, which it may stop,
restart or fill (the shared servers other tests use are never touched), and simulated traffic
running in the background while a test breaks things."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import psycopg
import redis

from backend.db import Database
from backend.simulation.traffic import Call, Traffic, TrafficReport, missing_records
from tests.support import free_port, wait_until


def _postgres_bin() -> Path:
    """The server binaries of the newest installed PostgreSQL (Debian keeps them off PATH)."""
    installed = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3])
    )
    if installed:
        return installed[-1].parent
    found = shutil.which("initdb")
    if found is None:
        raise RuntimeError("no PostgreSQL server binaries (initdb) found")
    return Path(found).parent


class PrivatePostgres:
    """A throw-away PostgreSQL cluster on a free port, with trust auth on 127.0.0.1.

    `initdb` and the server refuse to run as root; as root they run as the `postgres` user."""

    def __init__(self) -> None:
        self.bin = _postgres_bin()
        self.port = free_port()
        # Not under pytest's tmp dir: that one is private to root, and the server runs as
        # `postgres`.
        self.dir = Path(tempfile.mkdtemp(prefix="fastslow-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        if os.geteuid() == 0:
            shutil.chown(self.dir, user="postgres")
        initdb = [str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"]
        self._as_owner([*initdb, "--no-sync", "--no-instructions"])

    def _as_owner(self, args: list[str]) -> None:
        if os.geteuid() == 0:
            args = ["runuser", "-u", "postgres", "--", *args]
        subprocess.run(args, check=True, capture_output=True, timeout=120)

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=200"
        )
        pg_ctl = [str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options]
        self._as_owner([*pg_ctl, "-l", str(self.log), "-w", "-t", "60", "start"])

    def stop(self, mode: str = "fast") -> None:
        """`fast` disconnects clients and shuts down cleanly; `immediate` is a crash."""
        self._as_owner(
            [str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"]
        )

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # not running
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivateRedis:
    """A throw-away Redis on a free port (no persistence), which a test may fill or stop."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="fastslow-redis-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "server.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self) -> None:
        server = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*server, "--appendonly", "no", "--dir", str(self.dir)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(self._ping, timeout=20, what="the private Redis")

    def _ping(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def fill(self) -> None:
        """Full: no write is accepted any more (every write answers OOM), reads still work."""
        client = self.client()
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", "1")

    def drain(self) -> None:
        self.client().config_set("maxmemory", "0")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Background:
    """Traffic in a thread of its own while the test breaks things."""

    def __init__(self, traffic: Traffic, limit_s: float = 240) -> None:
        self.traffic = traffic
        self.stop = threading.Event()
        self.thread = threading.Thread(target=traffic.run, args=(limit_s, self.stop))

    def __enter__(self) -> Background:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=180)
        assert not self.thread.is_alive(), "the clients did not finish"

    def ok_since(self, t: float) -> int:
        return sum(1 for c in list(self.traffic.report.calls) if c.ok and c.started_s >= t)

    def refused_since(self, t: float) -> int:
        """Calls answered 503 that started at `t` or later."""
        return sum(
            1 for c in list(self.traffic.report.calls) if c.status == 503 and c.started_s >= t
        )

    def now(self) -> float:
        return self.traffic.elapsed()


def describe(calls: list[Call]) -> str:
    return "\n".join(
        f"{c.kind} {c.status} retry-after={c.retry_after} {c.error}" for c in calls[:10]
    )


def assert_nothing_lost(database_url: str, report: TrafficReport) -> None:
    database = Database(database_url)
    try:
        with database.session() as session:
            missing = missing_records(session, report)
    finally:
        database.dispose()
    assert missing == {"rollouts": [], "feedback": []}, missing
    assert not report.abandoned_ratings, "a client gave up on a rating"
