"""Serving benchmark: the platform in front of vLLM against vLLM alone, and the adapter swap.

Side by side in one run, on one machine:
- the same chat requests (system prompt + question, greedy, fixed length) sent directly to the
  vLLM server and through the platform (auth, live-version lookup, context, routing, rollout
  storage); p50/p99 latency and throughput at 1, 8 and 32 concurrent clients, rounds
  interleaved so drift on a shared machine hits both sides alike;
- the swap: time from the activation call to the first answer served by the new adapter, and
  failed requests while clients keep chatting.

Run: .venv/bin/python benchmarks/serving_overhead.py [--tokens 16] [--rounds 2]
Needs `make vllm-env` and a PostgreSQL at 127.0.0.1:5432 (falls back to SQLite).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
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

from backend.adapters.synthetic import make_lora  # noqa: E402
from backend.config import Settings  # noqa: E402
from backend.engines.vllm_server import vllm_launch  # noqa: E402

FASTSLOW = REPO / ".venv" / "bin" / "fastslow"
BASE_MODEL = os.environ.get(
    "FASTSLOW_BASE_MODEL", str(REPO / "data" / "models" / "SmolLM2-135M-Instruct")
)
SYSTEM = "You are a concise support agent for an online shop."
QUESTIONS = [f"Where is my order #{10000 + i}? It was due yesterday." for i in range(64)]


def wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit(f"{url} did not come up")


def database_url(tmp: Path) -> str:
    try:
        import psycopg

        name = f"fastslow_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    except Exception:
        return f"sqlite:///{tmp / 'bench.db'}"


async def load(
    url: str,
    headers: dict[str, str],
    model: str,
    concurrency: int,
    count: int,
    tokens: int,
    system: list[dict[str, str]],
) -> tuple[list[float], float, int]:
    """`count` requests by `concurrency` clients; returns latencies, wall time, failures.
    Greedy decoding of the same context on both sides: the engine does the same work."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for question in QUESTIONS[:count]:
        queue.put_nowait(question)
    latencies: list[float] = []
    failures = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal failures
        while not queue.empty():
            question = queue.get_nowait()
            body = {
                "model": model,
                "messages": [*system, {"role": "user", "content": question}],
                "max_tokens": tokens,
                "temperature": 0,
            }
            started = time.perf_counter()
            response = await http.post(url, json=body, headers=headers)
            if response.status_code == 200:
                latencies.append(time.perf_counter() - started)
            else:
                failures += 1

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=64)) as http:
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
    return latencies, time.perf_counter() - started, failures


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def swap(api: str, headers: dict[str, str], version: int) -> dict[str, Any]:
    """Clients chat while the adapter is swapped; time to the first answer from the new one."""
    stop = asyncio.Event()
    new_served = asyncio.Event()
    failures = 0
    first_new: float | None = None
    activation_started = 0.0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal failures, first_new
        while not stop.is_set():
            response = await http.post(
                f"{api}/v1/chat/completions",
                json={
                    "model": "support",
                    "messages": [{"role": "user", "content": "Hello"}],
                    "max_tokens": 4,
                },
                headers=headers,
            )
            if response.status_code != 200:
                failures += 1
            elif (
                response.headers["x-fastslow-adapter-version"] == str(version)
                and first_new is None
                and activation_started
            ):
                first_new = time.perf_counter()
                new_served.set()

    async with httpx.AsyncClient(timeout=600) as http:
        clients = [asyncio.create_task(client(http)) for _ in range(4)]
        await asyncio.sleep(2)
        activation_started = time.perf_counter()
        response = await http.post(
            f"{api}/api/v1/agents/support/adapters/activate",
            json={"version": version, "reason": "benchmark"},
            headers=headers,
        )
        activated = time.perf_counter()
        await new_served.wait()
        await asyncio.sleep(1)
        stop.set()
        await asyncio.gather(*clients)
    assert first_new is not None
    return {
        "activation_status": response.status_code,
        "activation_call_s": activated - activation_started,
        "to_first_answer_from_new_adapter_s": first_new - activation_started,
        "failed_requests": failures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    levels = [1, 8, 32]
    with tempfile.TemporaryDirectory(prefix="fastslow-serving-") as tmp:
        tmpdir = Path(tmp)
        settings = Settings(data_dir=tmpdir, base_model=BASE_MODEL)
        vllm_port, api_port = 8801, 8802
        launch = vllm_launch(settings, host="127.0.0.1", port=vllm_port)
        vllm = subprocess.Popen(
            launch.argv,
            env={**os.environ, **launch.env},
            stdout=(tmpdir / "vllm.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("FASTSLOW_")},
            "FASTSLOW_DATA_DIR": str(tmpdir),
            "FASTSLOW_BASE_MODEL": BASE_MODEL,
            "FASTSLOW_DATABASE_URL": database_url(tmpdir),
            "FASTSLOW_ENGINE": "vllm",
            "FASTSLOW_ENGINE_URL": f"http://127.0.0.1:{vllm_port}",
        }
        subprocess.run([str(FASTSLOW), "db", "upgrade"], env=env, check=True, capture_output=True)
        api = subprocess.Popen(
            [str(FASTSLOW), "api", "--port", str(api_port)],
            env=env,
            stdout=(tmpdir / "api.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        try:
            wait_http(f"http://127.0.0.1:{vllm_port}/health", 600)
            wait_http(f"http://127.0.0.1:{api_port}/healthz", 120)
            result = run(args, env, vllm_port, api_port, levels, tmpdir)
        finally:
            api.terminate()
            vllm.terminate()
            api.wait(timeout=60)
            vllm.wait(timeout=60)
    report(args, levels, result)


def run(
    args: argparse.Namespace,
    env: dict[str, str],
    vllm_port: int,
    api_port: int,
    levels: list[int],
    tmpdir: Path,
) -> dict[str, Any]:
    out = subprocess.run(
        [str(FASTSLOW), "tenant", "create", "bench"], env=env, check=True, capture_output=True
    )
    key = json.loads(out.stdout)["admin_key"]
    headers = {"Authorization": f"Bearer {key}"}
    api = f"http://127.0.0.1:{api_port}"
    httpx.post(
        f"{api}/api/v1/agents",
        json={"slug": "support", "system_prompt": SYSTEM, "max_tokens_cap": args.tokens},
        headers=headers,
    ).raise_for_status()
    direct_url = f"http://127.0.0.1:{vllm_port}/v1/chat/completions"
    platform_url = f"{api}/v1/chat/completions"
    base = Path(BASE_MODEL).name

    async def measure() -> dict[int, dict[str, Any]]:
        # The platform adds the agent's system prompt itself; direct requests carry it.
        direct_system = [{"role": "system", "content": SYSTEM}]
        await load(direct_url, {}, base, 4, 8, args.tokens, direct_system)  # warm-up
        await load(platform_url, headers, "support", 4, 8, args.tokens, [])
        results: dict[int, dict[str, Any]] = {}
        for level in levels:
            count = max(16, 2 * level)
            sides: dict[str, dict[str, Any]] = {
                s: {"latencies": [], "wall": 0.0, "failures": 0} for s in ("direct", "platform")
            }
            for _ in range(args.rounds):
                for side, url, hdrs, model, system in (
                    ("direct", direct_url, {}, base, direct_system),
                    ("platform", platform_url, headers, "support", []),
                ):
                    lat, wall, failed = await load(
                        url, hdrs, model, level, count, args.tokens, system
                    )
                    sides[side]["latencies"] += lat
                    sides[side]["wall"] += wall
                    sides[side]["failures"] += failed
            for stats in sides.values():
                stats["requests"] = len(stats["latencies"])
                stats["p50_s"] = statistics.median(stats["latencies"])
                stats["p99_s"] = pct(stats["latencies"], 0.99)
                stats["throughput_rps"] = stats["requests"] / stats["wall"]
                del stats["latencies"]
            results[level] = sides
        return results

    levels_result = asyncio.run(measure())

    # The swap: a real LoRA, uploaded and activated while clients chat.
    lora = make_lora(Path(BASE_MODEL), tmpdir / "lora", seed=1)
    with (
        (lora / "adapter_config.json").open("rb") as c,
        (lora / "adapter_model.safetensors").open("rb") as w,
    ):
        version = httpx.post(
            f"{api}/api/v1/agents/support/adapters",
            files={"config": c, "weights": w},
            headers=headers,
        ).json()["version"]
    swap_result = asyncio.run(swap(api, headers, version))
    return {"levels": levels_result, "swap": swap_result}


def report(args: argparse.Namespace, levels: list[int], result: dict[str, Any]) -> None:
    print(f"\nserving overhead, {args.tokens} tokens per answer, {os.cpu_count()} CPUs, vLLM CPU")
    print(
        f"{'clients':>8} {'p50 ratio':>10} {'p99 ratio':>10} {'throughput ratio':>17} "
        f"{'direct p50':>11} {'platform p50':>13} {'failures':>9}"
    )
    table = []
    for level in levels:
        d, p = result["levels"][level]["direct"], result["levels"][level]["platform"]
        row = {
            "clients": level,
            "p50_ratio": p["p50_s"] / d["p50_s"],
            "p99_ratio": p["p99_s"] / d["p99_s"],
            "throughput_ratio": p["throughput_rps"] / d["throughput_rps"],
            "direct": d,
            "platform": p,
        }
        table.append(row)
        print(
            f"{level:>8} {row['p50_ratio']:>10.3f} {row['p99_ratio']:>10.3f} "
            f"{row['throughput_ratio']:>17.3f} {d['p50_s']:>10.3f}s {p['p50_s']:>12.3f}s "
            f"{d['failures'] + p['failures']:>9}"
        )
    swap_result = result["swap"]
    to_first = swap_result["to_first_answer_from_new_adapter_s"]
    print(
        f"swap: first answer from the new adapter {to_first:.3f} s "
        f"after the activation call (call took {swap_result['activation_call_s']:.3f} s); "
        f"failed requests: {swap_result['failed_requests']}"
    )
    results = REPO / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    out = results / f"serving_overhead-{datetime.now(UTC).strftime('%Y-%m-%d')}.json"
    out.write_text(
        json.dumps(
            {
                "date": datetime.now(UTC).isoformat(),
                "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                "tokens": args.tokens,
                "rounds": args.rounds,
                "levels": table,
                "swap": swap_result,
            },
            indent=2,
        )
    )
    print(f"wrote {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
