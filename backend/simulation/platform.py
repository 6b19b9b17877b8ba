"""A whole embedded platform (`fastslow up`) in a child process, for the demo and benchmarks.

It runs in its own data dir (SQLite, SQLite broker, local engine, real worker and beat), and
is reached only through its public API, like any client would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

import backend.models  # noqa: F401  (every model mapped before the first query)
from backend.config import Settings
from backend.db import Database
from backend.tenants.service import create_tenant


@dataclass
class Platform:
    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]

    @property
    def log(self) -> Path:
        return self.data_dir / "platform.log"

    def create_tenant(self, name: str | None = None) -> str:
        """A new tenant in the platform's database; returns its admin key."""
        database = Database(Settings(data_dir=self.data_dir).database_url)
        try:
            with database.session() as session:
                _, issued = create_tenant(session, name=name or f"sim-{uuid.uuid4().hex[:6]}")
            return issued.plaintext
        finally:
            database.dispose()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_platform(
    data_dir: Path,
    port: int,
    *,
    base_model: str | None = None,
    env: dict[str, str] | None = None,
    timeout_s: float = 300,
) -> Platform:
    """Start `fastslow up` on embedded defaults in `data_dir`; returns once the API answers.

    Server settings of the calling shell (database, broker, engine) are dropped: the platform
    is self-contained in its data dir, except for what `env` sets (e.g. a vLLM engine).
    """
    child = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FASTSLOW_") or k in ("FASTSLOW_BASE_MODEL", "FASTSLOW_PLATFORM_KEY")
    }
    child["FASTSLOW_DATA_DIR"] = str(data_dir)
    if base_model is not None:
        child["FASTSLOW_BASE_MODEL"] = base_model
    child.update(env or {})
    data_dir.mkdir(parents=True, exist_ok=True)
    log = (data_dir / "platform.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "backend.cli", "up", "--port", str(port)],
        env=child,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    platform = Platform(f"http://127.0.0.1:{port}", data_dir, process)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the platform exited while starting; see {platform.log}")
        try:
            if httpx.get(f"{platform.url}/healthz", timeout=2).status_code == 200:
                return platform
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    platform.stop()
    raise RuntimeError(f"the platform did not answer within {timeout_s:.0f} s; see {platform.log}")
