"""Fast-loop benchmark: how quickly feedback becomes a better live prompt, and how good it is
against plain GEPA with the same budget outside the platform.

1. Starts the embedded platform (`fastslow up`: SQLite, SQLite broker, local engine, real
   worker and beat processes) in a temporary data dir; with `--engine vllm`, a vLLM server
   first, and the platform serves and optimises through it.
2. Simulated users who want short answers ask N questions and rate the answers; the time runs
   from the N-th rating to the moment the agent's live prompt version changes (beat notices the
   ratings, a worker runs the optimiser, the gate promotes).
3. Baseline, side by side on the same data, split, scorer and budget: `gepa.optimize` with
   GEPA's own reflective proposer rewriting the system prompt, the same base model reflecting.

Run: .venv/bin/python benchmarks/fast_loop.py [--budget 36] [--engine local|vllm]
Prints a table and writes benchmarks/results/fast_loop-[vllm-]<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import select  # noqa: E402

from backend.agents.models import Agent  # noqa: E402
from backend.config import Settings  # noqa: E402
from backend.db import Database  # noqa: E402
from backend.engines import ChatMessage, GenerationRequest, SamplingParams  # noqa: E402
from backend.engines.local import LocalEngine  # noqa: E402
from backend.scoring.scorer import Scorer  # noqa: E402
from backend.scoring.spec import RewardSpec  # noqa: E402
from backend.simulation import (  # noqa: E402
    SUPPORT_QUESTIONS,
    Preference,
    ShortAnswers,
    SimQuestion,
    reward_spec,
    strict_user,
)
from backend.simulation.platform import Platform, start_platform  # noqa: E402
from worker.dataset import load_examples, split  # noqa: E402

BASE_MODEL = os.environ.get(
    "FASTSLOW_BASE_MODEL", str(REPO / "data" / "models" / "SmolLM2-135M-Instruct")
)
SYSTEM_PROMPT = "You are a helpful customer support agent."


def run_platform(up: Platform, budget: int, preference: Preference) -> dict[str, Any]:
    url = up.url
    key = up.create_tenant("bench")
    headers = {"Authorization": f"Bearer {key}"}
    questions = SUPPORT_QUESTIONS
    httpx.post(
        f"{url}/api/v1/agents",
        json={
            "slug": "support",
            "system_prompt": SYSTEM_PROMPT,
            "reward": reward_spec(preference),
            "max_tokens_cap": 64,
            "fast_loop": {
                "min_new_feedback": len(questions),
                "min_examples": 4,
                "budget": budget,
                "max_tokens": 48,
            },
        },
        headers=headers,
    ).raise_for_status()

    def ask(question: str) -> dict[str, Any]:
        response = httpx.post(
            f"{url}/v1/chat/completions",
            json={
                "model": "support",
                "messages": [{"role": "user", "content": question}],
                "max_tokens": 48,
                "temperature": 0,
            },
            headers=headers,
            timeout=600,
        )
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    with ThreadPoolExecutor(max_workers=8) as pool:
        completions = list(pool.map(ask, questions))
    user = strict_user(preference)
    asked = [SimQuestion(q, "bench") for q in questions]
    satisfied_before = sum(
        preference.satisfied(q, c["choices"][0]["message"]["content"])
        for q, c in zip(asked, completions, strict=True)
    )
    for question, completion in zip(asked, completions, strict=True):
        answer = completion["choices"][0]["message"]["content"]
        body = user.feedback(question, completion["id"], answer)
        httpx.post(f"{url}/v1/feedback", json=body, headers=headers).raise_for_status()
    nth_feedback = time.monotonic()

    live = 1
    while time.monotonic() - nth_feedback < 900:
        live = httpx.get(f"{url}/api/v1/agents/support", headers=headers).json()[
            "live_prompt_version"
        ]
        jobs = httpx.get(f"{url}/api/v1/jobs", params={"kind": "optimize"}, headers=headers).json()
        if live != 1 or (jobs and jobs[0]["status"] in ("succeeded", "failed")):
            break
        time.sleep(0.5)
    seconds_to_live = time.monotonic() - nth_feedback if live != 1 else None
    job = jobs[0]
    return {
        "seconds_from_nth_feedback_to_live": seconds_to_live,
        "outcome": job["result"].get("outcome"),
        "seed_validation": job["metrics"].get("seed_score"),
        "best_validation": job["metrics"].get("best_score"),
        "metric_calls": job["metrics"].get("metric_calls"),
        "job_seconds": _seconds(job["started_at"], job["finished_at"]),
        "users_satisfied_before": f"{satisfied_before}/{len(questions)}",
    }


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def run_plain_gepa(data_dir: Path, budget: int, preference: Preference) -> dict[str, Any]:
    """GEPA outside the platform: its default reflective proposer on the system prompt only,
    with the same data, split, scorer, budget, model and decoding."""
    from gepa.api import optimize
    from gepa.core.adapter import EvaluationBatch
    from gepa.core.result import GEPAResult

    settings = Settings(data_dir=data_dir, base_model=BASE_MODEL)
    engine = LocalEngine(settings.base_model_path, settings.base_model_name)
    database = Database(settings.database_url)
    with database.session() as session:
        agent = session.scalars(select(Agent)).unique().one()
        examples = load_examples(session, tenant_id=agent.tenant_id, agent_id=agent.id, limit=200)
    train, validation = split(examples, 0.4)
    scorer = Scorer(RewardSpec.model_validate(reward_spec(preference)))
    loop = asyncio.new_event_loop()
    sampling = SamplingParams(max_tokens=48, temperature=0.0)

    class PromptOnly:
        propose_new_texts = None

        def evaluate(
            self, batch: list[Any], candidate: dict[str, str], capture_traces: bool = False
        ) -> Any:
            async def one(example: Any) -> tuple[str, float, str]:
                messages: list[ChatMessage] = [
                    {"role": "system", "content": candidate["system_prompt"]},
                    *example.conversation,
                ]
                answer = (await engine.generate(GenerationRequest(messages, sampling))).text
                score = await scorer.score(question=example.question, answer=answer)
                return answer, score.value or 0.0, score.feedback

            async def everything() -> list[tuple[str, float, str]]:
                return await asyncio.gather(*(one(e) for e in batch))

            results = loop.run_until_complete(everything())
            trajectories = [
                {"question": e.question, "answer": a, "feedback": f}
                for e, (a, _, f) in zip(batch, results, strict=True)
            ]
            return EvaluationBatch(
                outputs=[a for a, _, _ in results],
                scores=[s for _, s, _ in results],
                trajectories=trajectories if capture_traces else None,
            )

        def make_reflective_dataset(
            self, candidate: Any, eval_batch: Any, components: list[str]
        ) -> Any:
            records = [
                {
                    "Inputs": t["question"],
                    "Generated Outputs": t["answer"],
                    "Feedback": t["feedback"],
                }
                for t in eval_batch.trajectories
            ]
            return {c: records for c in components}

    def reflection_lm(prompt: str | list[dict[str, Any]]) -> str:
        text = prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)
        messages: list[ChatMessage] = [{"role": "user", "content": text}]
        sampling = SamplingParams(max_tokens=192, temperature=0.7, seed=0)
        return loop.run_until_complete(engine.generate(GenerationRequest(messages, sampling))).text

    started = time.monotonic()
    result: GEPAResult[Any, Any] = optimize(
        seed_candidate={"system_prompt": SYSTEM_PROMPT},
        trainset=train,
        valset=validation,
        adapter=PromptOnly(),  # type: ignore[arg-type]
        reflection_lm=reflection_lm,
        max_metric_calls=budget,
        raise_on_exception=False,
        display_progress_bar=False,
        seed=0,
    )
    return {
        "seed_validation": result.val_aggregate_scores[0],
        "best_validation": max(result.val_aggregate_scores),
        "metric_calls": result.total_metric_calls,
        "seconds": time.monotonic() - started,
    }


def start_vllm(data_dir: Path, stack: ExitStack) -> str:
    """A vLLM server (the CPU build here) for the base model; stopped when `stack` closes."""
    from backend.engines.vllm_server import vllm_launch

    port = 8767
    launch = vllm_launch(
        Settings(data_dir=data_dir, base_model=BASE_MODEL), host="127.0.0.1", port=port
    )
    server = subprocess.Popen(
        launch.argv,
        env={**os.environ, **launch.env},
        stdout=(data_dir / "vllm.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    stack.callback(server.wait, 60)
    stack.callback(server.terminate)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit((data_dir / "vllm.log").read_text()[-3000:])
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise SystemExit("vLLM did not become healthy within 15 minutes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=int, default=36)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--engine",
        choices=["local", "vllm"],
        default="local",
        help="vllm: the platform serves and optimises through a vLLM server (`make vllm-env`)",
    )
    args = parser.parse_args()
    preference = ShortAnswers(limit=12)
    with tempfile.TemporaryDirectory(prefix="fastslow-bench-") as tmp, ExitStack() as stack:
        data_dir = Path(tmp)
        env = {}
        if args.engine == "vllm":
            env = {"FASTSLOW_ENGINE": "vllm", "FASTSLOW_ENGINE_URL": start_vllm(data_dir, stack)}
        up = start_platform(data_dir, args.port, base_model=BASE_MODEL, env=env)
        try:
            ours = run_platform(up, args.budget, preference)
        finally:
            up.stop()
        baseline = run_plain_gepa(data_dir, args.budget, preference)

    ratio = (ours["best_validation"] or 0) / max(baseline["best_validation"], 1e-9)
    rows = [
        (
            "time from N-th rating to new version live (s)",
            ours["seconds_from_nth_feedback_to_live"],
            "-",
        ),
        ("optimisation job (s)", ours["job_seconds"], baseline["seconds"]),
        ("validation score before", ours["seed_validation"], baseline["seed_validation"]),
        ("validation score after", ours["best_validation"], baseline["best_validation"]),
        ("metric calls used", ours["metric_calls"], baseline["metric_calls"]),
    ]
    print(
        f"\nfast loop on the {args.engine} engine, budget {args.budget} answers, "
        f"{platform.processor() or platform.machine()}"
    )
    print(f"{'':48} {'fastslow':>10} {'plain GEPA':>11}")
    for name, a, b in rows:
        fa = f"{a:.3f}" if isinstance(a, float) else str(a)
        fb = f"{b:.3f}" if isinstance(b, float) else str(b)
        print(f"{name:48} {fa:>10} {fb:>11}")
    print(f"validation after, fastslow / plain GEPA: {ratio:.2f}x (outcome: {ours['outcome']})")

    results = REPO / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    engine = "" if args.engine == "local" else f"{args.engine}-"
    out = results / f"fast_loop-{engine}{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "date": datetime.now(UTC).isoformat(),
                "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                "budget": args.budget,
                "engine": args.engine,
                "fastslow": ours,
                "plain_gepa": baseline,
                "ratio_best_validation": ratio,
            },
            indent=2,
        )
    )
    print(f"wrote {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
