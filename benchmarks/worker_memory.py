"""Resident memory of idle Celery workers, by the queues they serve and their engine.

Each configuration is a real `fastslow worker` process (prefork, `--concurrency 1`: the main
process and one pool child) on a broker of its own (a throwaway SQLite transport, so it takes
no one else's tasks), with no database or engine behind it: an idle worker touches neither.
Once it logged `ready.`, it is left alone for `--settle` seconds, then its memory is read with
psutil: RSS of each process, and PSS (the parent and the child share the pages imported before
the fork; PSS splits them, so its sum is what the worker costs the machine).

Also measured, in a plain process that imports the tasks: what loading the fast handlers
(evaluate, optimize: GEPA) and then the train handler (torch, peft, transformers, the trainer)
adds, which a worker's child pays on its first job of those kinds.

`--before DIR` measures the same configurations from another checkout too (e.g. the code
before the single job task: `git archive <commit> | tar -x -C DIR`), run with this venv.

Run: .venv/bin/python benchmarks/worker_memory.py [--before DIR] [--settle 10]
Writes benchmarks/results/worker_memory-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024

CONFIGURATIONS = [
    # (name, --queues or None for the default fast,train,maintenance, engine)
    ("fast, vllm engine", "fast", "vllm"),
    ("train, local engine", "train", "local"),
    ("default queues, local engine", None, "local"),
]

HANDLERS = """
import json, psutil, sys
import worker.tasks
from backend.jobs.contract import JobKind
from worker.handlers import load_handler
me = psutil.Process()
rss = {"tasks imported": me.memory_info().rss / 2**20}
load_handler(JobKind.EVALUATE)
load_handler(JobKind.OPTIMIZE)
rss["fast handlers loaded"] = me.memory_info().rss / 2**20
torch_before_train = "torch" in sys.modules
load_handler(JobKind.TRAIN)
rss["train handler loaded"] = me.memory_info().rss / 2**20
print(json.dumps({"rss_mib": rss, "torch_before_train": torch_before_train,
                  "torch_after_train": "torch" in sys.modules, "peft": "peft" in sys.modules}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(tmp: Path, engine: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTSLOW_")}
    env.update(
        FASTSLOW_DATA_DIR=str(tmp),
        FASTSLOW_DATABASE_URL=f"sqlite:///{tmp / 'fastslow.db'}",
        FASTSLOW_BROKER_URL=f"sqla+sqlite:///{tmp / 'broker.db'}",
        FASTSLOW_ENGINE=engine,
        FASTSLOW_ENGINE_URL=f"http://127.0.0.1:{_free_port()}/v1",  # nobody listens
        FASTSLOW_WORKER_METRICS_PORT="0",
    )
    return env


def _memory(pid: int) -> dict[str, Any]:
    main = psutil.Process(pid)
    processes = [main, *main.children(recursive=True)]
    rows = []
    for p in processes:
        full = p.memory_full_info()
        rows.append({"pid": p.pid, "rss_mib": full.rss / MIB, "pss_mib": full.pss / MIB})
    return {
        "processes": rows,
        "rss_main_mib": rows[0]["rss_mib"],
        "rss_sum_mib": sum(r["rss_mib"] for r in rows),
        "pss_sum_mib": sum(r["pss_mib"] for r in rows),
    }


def measure_worker(code: Path, queues: str | None, engine: str, settle_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="worker-memory-") as tmp:
        log = Path(tmp) / "worker.log"
        argv = [sys.executable, "-m", "backend.cli", "worker", "--concurrency", "1"]
        argv += ["--queues", queues] if queues else []
        with log.open("wb") as out:
            # cwd first on sys.path (`-m`): the checkout in `code` is the one imported.
            process = subprocess.Popen(
                argv, cwd=code, env=_env(Path(tmp), engine), stdout=out, stderr=out
            )
        try:
            deadline = time.monotonic() + 180
            while b"ready." not in log.read_bytes():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"worker did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
            time.sleep(settle_s)
            memory = _memory(process.pid)
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    return memory


def measure_handlers() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="worker-memory-") as tmp:
        done = subprocess.run(
            [sys.executable, "-c", HANDLERS],
            cwd=REPO,
            env=_env(Path(tmp), "local"),
            capture_output=True,
            text=True,
            check=True,
        )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="another checkout to measure too")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds idle after ready")
    args = parser.parse_args()

    checkouts = [("this checkout", REPO)]
    if args.before:
        checkouts.append((f"before ({args.before})", args.before.resolve()))
    results: list[dict[str, Any]] = []
    for label, code in checkouts:
        for name, queues, engine in CONFIGURATIONS:
            memory = measure_worker(code, queues, engine, args.settle)
            results.append({"code": label, "worker": name, **memory})
            print(
                f"{label:>30} | {name:<28} | RSS main {memory['rss_main_mib']:6.0f} MiB"
                f" | RSS sum {memory['rss_sum_mib']:6.0f} MiB | PSS sum"
                f" {memory['pss_sum_mib']:6.0f} MiB",
                flush=True,
            )
    handlers = measure_handlers()
    print(
        "plain process, RSS: "
        + ", ".join(f"{k} {v:.0f} MiB" for k, v in handlers["rss_mib"].items())
        + f" (torch before train {handlers['torch_before_train']}, after"
        f" {handlers['torch_after_train']})"
    )
    out = REPO / "benchmarks" / "results" / f"worker_memory-{datetime.now(UTC):%Y-%m-%d}.json"
    out.write_text(
        json.dumps(
            {
                "machine": {
                    "cpus": os.cpu_count(),
                    "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
                    "platform": platform.platform(),
                    "python": platform.python_version(),
                },
                "settle_s": args.settle,
                "workers": results,
                "handlers": handlers,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
