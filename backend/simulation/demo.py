"""`fastslow demo`: simulated users teach an agent, and the two loops learn from them.

1. Users with a hidden preference ask questions and rate the answers (the baseline, with the
   fast loop off so that every one of them is answered by the first prompt).
2. The fast loop is turned on; their ratings start it by themselves; a better prompt goes live.
3. More users ask; then a slow-loop run trains a LoRA adapter on the agent's questions, with
   contexts sampled from the fast loop's population, and it is swapped in if it passes the gate.
4. More users ask. Hidden-rule satisfaction per phase is printed, and plotted over time with
   the prompt and adapter activations marked.

Everything goes through the public API of a running platform, like any client would.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from backend.simulation.questions import SimQuestion, question_set, split
from backend.simulation.users import PREFERENCES, UserModel

Say = Callable[[str], None]


@dataclass(frozen=True)
class DemoConfig:
    preference: str = "short"
    questions_per_phase: int = 16
    concurrency: int = 4
    max_tokens: int = 48
    seed: int = 0
    fast_loop: dict[str, Any] = field(
        default_factory=lambda: {"budget": 36, "max_tokens": 48, "min_examples": 4}
    )
    slow_loop: dict[str, Any] | None = field(
        default_factory=lambda: {
            "steps": 3,
            "questions_per_step": 4,
            "group_size": 4,
            "max_tokens": 32,
            "learning_rate": 1e-3,
            "contexts": "population",
            "eval_questions": 4,
            "min_questions": 4,
            "kl_budget": 2.0,
            "retention_tolerance": 0.25,
        }
    )
    wait_s: float = 900.0


PRESETS: dict[str, DemoConfig] = {
    # A few minutes on 2 CPU cores.
    "cpu": DemoConfig(),
    # A real run where a GPU serves vLLM and trains: more traffic, a longer training run.
    "gpu": DemoConfig(
        questions_per_phase=96,
        concurrency=16,
        fast_loop={"budget": 150, "max_tokens": 96, "min_examples": 8},
        slow_loop={
            "steps": 30,
            "questions_per_step": 8,
            "group_size": 8,
            "max_tokens": 96,
            "learning_rate": 2e-4,
            "contexts": "population",
            "eval_questions": 32,
        },
    ),
}


@dataclass
class Sample:
    """One answer: when, in which phase, whether the hidden rule was met, what served it."""

    t: float
    phase: str
    satisfied: bool
    prompt_version: str
    adapter_version: str


@dataclass
class DemoResult:
    samples: list[Sample]
    events: list[tuple[float, str]]  # (t, "prompt v2" / "adapter v1")
    phases: dict[str, float]  # phase -> satisfaction
    rollouts: int
    fast_loop: dict[str, Any]
    slow_loop: dict[str, Any]


class DemoClient:
    def __init__(self, url: str, key: str) -> None:
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=600
        )

    def get(self, path: str, **params: Any) -> Any:
        response = self.http.get(path, params=params)
        response.raise_for_status()
        return response.json()

    def patch(self, path: str, body: Any) -> Any:
        response = self.http.patch(path, json=body)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: Any = None) -> Any:
        response = self.http.post(path, json=body)
        response.raise_for_status()
        return response.json() if response.content else None


def run_demo(
    client: DemoClient, config: DemoConfig, *, slug: str = "demo-support", say: Say = print
) -> DemoResult:
    preference = PREFERENCES[config.preference]
    users = UserModel(preference, seed=config.seed)
    asked, _held_out = split(question_set(600, seed=config.seed))
    pool = iter(asked)
    started = time.monotonic()
    samples: list[Sample] = []
    events: list[tuple[float, str]] = []
    n = config.questions_per_phase
    client.post(
        "/api/v1/agents",
        {
            "slug": slug,
            "system_prompt": "You are a helpful customer support agent.",
            "description": f"demo agent; its users want: {preference.name}",
            "reward": {"checks": [preference.reward_check()], "correction_weight": 0},
            "max_tokens_cap": max(config.max_tokens, 64),
            # Off (pinned) while the baseline is measured; see below.
            "fast_loop": {**config.fast_loop, "pinned": True},
            "slow_loop": config.slow_loop or {},
        },
    )
    say(f"agent {slug!r}: users' hidden preference is {preference.name!r}")

    def phase(name: str) -> tuple[float, int]:
        """Satisfaction of a batch of answers, and how many of them users rated."""
        batch = [next(pool) for _ in range(n)]
        with ThreadPoolExecutor(max_workers=config.concurrency) as threads:
            results = list(
                threads.map(
                    lambda q: ask_and_rate(client, slug, q, users, config.max_tokens), batch
                )
            )
        for answered, satisfied, prompt_v, adapter_v, _rated in results:
            samples.append(Sample(answered - started, name, satisfied, prompt_v, adapter_v))
        rate = sum(r[1] for r in results) / len(results)
        say(f"[{name}] {len(results)} answers, hidden-rule satisfaction {rate:.0%}")
        return rate, sum(r[4] for r in results)

    phases: dict[str, float] = {}
    phases["before"], rated = phase("before")

    # On, due after as many ratings as the baseline brought: beat starts the run at its next
    # tick, on all of them (a run started halfway through would learn from half the data).
    client.patch(
        f"/api/v1/agents/{slug}",
        {"fast_loop": {"pinned": False, "min_new_feedback": max(1, rated)}},
    )
    say(f"fast loop on: it starts by itself on the {rated} ratings...")
    fast = wait_for_job(client, slug, "optimize", config.wait_s, say)
    agent = client.get(f"/api/v1/agents/{slug}")
    if agent["live_prompt_version"] != 1:
        events.append((time.monotonic() - started, f"prompt v{agent['live_prompt_version']}"))
    phases["after fast loop"], _ = phase("after fast loop")

    slow: dict[str, Any] = {}
    if config.slow_loop is not None:
        say("training an adapter (slow loop)...")
        job = client.post(f"/api/v1/agents/{slug}/train")
        slow = follow_job(client, job["id"], config.wait_s, say)
        agent = client.get(f"/api/v1/agents/{slug}")
        if agent["live_adapter_version"]:
            events.append((time.monotonic() - started, f"adapter v{agent['live_adapter_version']}"))
        phases["after slow loop"], _ = phase("after slow loop")
    rollouts = len(client.get("/api/v1/rollouts", agent=slug, limit=500))
    return DemoResult(samples, events, phases, rollouts, fast, slow)


def ask_and_rate(
    client: DemoClient, slug: str, question: SimQuestion, users: UserModel, max_tokens: int
) -> tuple[float, bool, str, str, bool]:
    """One user asks and (maybe) rates: (when it was answered, rule met, prompt, adapter,
    rated)."""
    response = client.http.post(
        "/v1/chat/completions",
        json={
            "model": slug,
            "messages": [{"role": "user", "content": question.text}],
            "max_tokens": max_tokens,
            "temperature": 0,
        },
    )
    response.raise_for_status()
    answered = time.monotonic()
    answer = response.json()["choices"][0]["message"]["content"]
    completion = response.json()["id"]
    body = users.feedback(question, completion, answer)
    if body is not None:
        client.post("/v1/feedback", body)
    return (
        answered,
        users.preference.satisfied(question, answer),
        response.headers["x-fastslow-prompt-version"],
        response.headers["x-fastslow-adapter-version"],
        body is not None,
    )


def wait_for_job(
    client: DemoClient, slug: str, kind: str, timeout_s: float, say: Say
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        jobs = client.get("/api/v1/jobs", agent=slug, kind=kind)
        if jobs:
            return follow_job(client, jobs[0]["id"], deadline - time.monotonic(), say)
        time.sleep(1)
    raise TimeoutError(f"no {kind} job started within {timeout_s:.0f} s")


def follow_job(client: DemoClient, job_id: str, timeout_s: float, say: Say) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/api/v1/jobs/{job_id}")
        line = f"  {job['kind']}: {job['status']} {job['step']}/{job['total']}"
        metrics = job["metrics"]
        for key in ("best_score", "reward", "kl"):
            if isinstance(metrics.get(key), float):
                line += f" {key}={metrics[key]:.3f}"
        if line != last:
            say(line)
            last = line
        if job["status"] in ("succeeded", "failed", "cancelled"):
            if job["status"] != "succeeded":
                say(f"  {job['kind']} ended {job['status']}: {job['error']}")
            return job
        time.sleep(1)
    raise TimeoutError(f"job {job_id} did not finish within the demo's patience")


def table(result: DemoResult) -> str:
    rows = [f"{'phase':<18} {'hidden-rule satisfaction':>25}"]
    rows += [f"{name:<18} {rate:>25.0%}" for name, rate in result.phases.items()]
    fast = result.fast_loop.get("result", {})
    slow = result.slow_loop.get("result", {})
    rows.append("")
    rows.append(f"rollouts recorded: {result.rollouts}")
    if fast:
        metrics = result.fast_loop.get("metrics", {})
        rows.append(
            f"fast loop: {fast.get('outcome')} ({fast.get('reason')}); answers generated: "
            f"{metrics.get('metric_calls')}, candidates: {metrics.get('candidates')}, "
            f"proposals: {metrics.get('proposals')}"
        )
    if slow:
        assessment = slow.get("assessment", {})
        rows.append(
            f"slow loop: {slow.get('outcome')} ({slow.get('reason')}); KL to base "
            f"{assessment.get('kl_to_base', float('nan')):.3f}, reward without context "
            f"{assessment.get('candidate_reward_no_context', float('nan')):.2f}"
        )
    return "\n".join(rows)


def plot(result: DemoResult, path: Path, *, window: int = 8) -> Path:
    """Satisfaction over time (rolling mean), prompt and adapter activations marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = [s.t for s in result.samples]
    values = [float(s.satisfied) for s in result.samples]
    rolling = [
        sum(values[max(0, i - window + 1) : i + 1]) / len(values[max(0, i - window + 1) : i + 1])
        for i in range(len(values))
    ]
    figure, axes = plt.subplots(figsize=(9, 4.5))
    axes.plot(times, rolling, color="#2556c4", label=f"satisfaction (last {window} answers)")
    axes.scatter(times, values, s=8, color="#8a94a6", alpha=0.5, label="one answer")
    for t, label in result.events:
        color = "#2e8b57" if label.startswith("prompt") else "#8e44ad"
        axes.axvline(t, color=color, linestyle="--")
        axes.text(t, 1.03, label, color=color, rotation=0, ha="center", fontsize=9)
    axes.set_ylim(-0.05, 1.12)
    axes.set_xlabel("seconds since the demo started")
    axes.set_ylabel("hidden rule met")
    axes.set_title("Simulated users' satisfaction as fastslow learns")
    axes.legend(loc="lower right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
