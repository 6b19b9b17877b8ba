"""Learning benchmark: Fast-Slow Training (prompt population + RL) vs RL alone vs prompt
optimisation alone, on a simulated tenant whose users hold a verifiable hidden rule.

One embedded platform (`fastslow up`: SQLite, SQLite broker, local engine, real worker and
beat), two agents with the same prompt, reward and rated questions (simulated users):
- `rl`: the slow loop alone: LoRA RL with the seed prompt as the only context;
- `fst`: the fast loop (GEPA) first, then the slow loop with contexts sampled from the fast
  loop's Pareto population (Fast-Slow Training). The fast loop's promoted prompt on its own,
  without an adapter, is the prompt-optimisation-alone arm (its reward is the assessment's
  `live_reward`, measured on the same validation questions).
Everything runs through the public API, as jobs on the real worker.

Reported, side by side: training reward against rollouts used (answers generated, the fast
loop's included), validation reward of each arm, KL to the base model per token, the rollouts
FST needs to reach RL's best reward, and a PNG plot. The published claims to test against
(Fast-Slow Training): about 3x fewer rollouts than RL to reach RL's best, about 70% less KL.

Run: .venv/bin/python benchmarks/learning.py [--preset cpu|gpu] [--seed N] [--anchor]
Writes benchmarks/results/learning-<preset>-<anchor|no-anchor>-seed<N>-<date>.json and .png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backend.simulation import PREFERENCES, UserModel, question_set, reward_spec  # noqa: E402
from backend.simulation.demo import DemoClient, ask_and_rate, follow_job  # noqa: E402
from backend.simulation.platform import start_platform  # noqa: E402

BASE_MODEL = os.environ.get(
    "FASTSLOW_BASE_MODEL", str(REPO / "data" / "models" / "SmolLM2-135M-Instruct")
)
SYSTEM_PROMPT = "You are a helpful customer support agent."


@dataclass(frozen=True)
class Config:
    preference: str = "short"
    questions: int = 24  # rated questions the agents start from
    steps: int = 12
    questions_per_step: int = 4
    group_size: int = 4
    max_tokens: int = 32
    learning_rate: float = 1e-3
    fast_budget: int = 36
    eval_questions: int = 8
    refresh_every: int = 4  # FST interleaving: a fast-loop round every T RL steps
    refresh_budget: int = 12
    # Steps where every answer earned the full reward take a step on the exact KL alone.
    anchor_solved_steps: bool = False
    seed: int = 0


PRESETS = {
    # About 20-30 minutes on 2 CPU cores.
    "cpu": Config(),
    # For a machine with a GPU serving and training: longer runs, larger groups.
    "gpu": Config(
        questions=96,
        steps=60,
        questions_per_step=8,
        group_size=8,
        max_tokens=64,
        learning_rate=2e-4,
        fast_budget=150,
        eval_questions=32,
        refresh_every=10,
        refresh_budget=48,
    ),
}


def slow_loop(config: Config, contexts: str) -> dict[str, Any]:
    fst = contexts == "population"
    return {
        "refresh_every": config.refresh_every if fst else 0,
        "refresh_budget": config.refresh_budget,
        "steps": config.steps,
        "questions_per_step": config.questions_per_step,
        "group_size": config.group_size,
        "max_tokens": config.max_tokens,
        "learning_rate": config.learning_rate,
        "anchor_solved_steps": config.anchor_solved_steps,
        "contexts": contexts,
        "eval_questions": config.eval_questions,
        "min_questions": 4,
        "checkpoint_every": 10_000,
        "seed": config.seed,
        # A benchmark measures; it does not gate.
        "kl_budget": 100.0,
        "retention_tolerance": 1.0,
    }


def seed_agents(client: DemoClient, config: Config) -> dict[str, float]:
    """Both agents get the same questions, answers (greedy, same prompt) and ratings."""
    preference = PREFERENCES[config.preference]
    questions = question_set(config.questions, seed=config.seed)
    satisfied: dict[str, float] = {}
    for slug, contexts in (("rl", "live"), ("fst", "population")):
        client.post(
            "/api/v1/agents",
            {
                "slug": slug,
                "system_prompt": SYSTEM_PROMPT,
                "reward": reward_spec(preference),
                "max_tokens_cap": 128,
                # Never by itself: the benchmark starts every job.
                "fast_loop": {
                    "min_new_feedback": 10_000,
                    "max_wait_minutes": 10_080,
                    "min_examples": 4,
                    "budget": config.fast_budget,
                    "max_tokens": config.max_tokens,
                },
                "slow_loop": slow_loop(config, contexts),
            },
        )
        users = UserModel(preference, seed=config.seed)
        with ThreadPoolExecutor(max_workers=4) as threads:
            results = list(
                threads.map(
                    lambda q, s=slug, u=users: ask_and_rate(client, s, q, u, config.max_tokens),
                    questions,
                )
            )
        satisfied[slug] = sum(r[1] for r in results) / len(results)
    return satisfied


def run_job(client: DemoClient, slug: str, kind: str) -> dict[str, Any]:
    job = client.post(f"/api/v1/agents/{slug}/{kind}")
    done = follow_job(client, job["id"], 3600, say=lambda line: print(f"[{slug}] {line}"))
    if done["status"] != "succeeded":
        raise SystemExit(f"{slug} {kind} ended {done['status']}: {done['error']}")
    return done


def rollouts_to_reach(
    rewards: list[float], rollouts: list[int], target: float, window: int = 3
) -> int | None:
    """Answers generated until the moving average of training reward first reaches `target`."""
    for i in range(len(rewards)):
        recent = rewards[max(0, i - window + 1) : i + 1]
        if sum(recent) / len(recent) >= target - 1e-9:
            return rollouts[i]
    return None


def kl_when_reached(
    rewards: list[float], kls: list[float | None], target: float, window: int = 3
) -> float | None:
    """The training KL (last measured) at the step the reward's moving average first reaches
    `target`: KL at matched reward, the published comparison."""
    for i in range(len(rewards)):
        recent = rewards[max(0, i - window + 1) : i + 1]
        if sum(recent) / len(recent) >= target - 1e-9:
            measured = [k for k in kls[: i + 1] if k is not None]
            return measured[-1] if measured else None
    return None


def best_moving_average(rewards: list[float], window: int = 3) -> float:
    return max(
        sum(rewards[max(0, i - window + 1) : i + 1]) / len(rewards[max(0, i - window + 1) : i + 1])
        for i in range(len(rewards))
    )


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for arm, color in (("rl", "#c0392b"), ("fst", "#2556c4")):
        data = result["arms"][arm]
        left.plot(data["rollouts"], data["reward_curve"], color=color, label=data["label"])
        kl = [float("nan") if k is None else k for k in data["kl_curve"]]
        right.plot(data["rollouts"], kl, color=color, marker=".", label=data["label"])
    prompt = result["arms"]["prompt"]
    left.scatter(
        [prompt["rollouts_used"]],
        [prompt["validation_reward"]],
        color="#2e8b57",
        zorder=3,
        label="prompt optimisation alone (validation)",
    )
    left.set_xlabel("rollouts used (answers generated)")
    left.set_ylabel("training reward (hidden rule met)")
    left.set_ylim(-0.05, 1.05)
    left.legend(loc="lower right", fontsize=8)
    right.set_xlabel("rollouts used (answers generated)")
    right.set_ylabel("KL to the base model per token")
    right.legend(loc="upper left", fontsize=8)
    figure.suptitle("Fast-Slow Training vs RL alone vs prompt optimisation alone")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--preference", choices=sorted(PREFERENCES), default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None, help="questions, users and sampling")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument(
        "--anchor", action="store_true", help="anchor solved steps on the exact KL to the base"
    )
    args = parser.parse_args()
    config = PRESETS[args.preset]
    if args.preference:
        config = Config(**{**asdict(config), "preference": args.preference})
    if args.steps:
        config = Config(**{**asdict(config), "steps": args.steps})
    if args.anchor:
        config = Config(**{**asdict(config), "anchor_solved_steps": True})
    if args.seed is not None:
        config = Config(**{**asdict(config), "seed": args.seed})
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fastslow-learning-") as tmp:
        up = start_platform(Path(tmp), args.port, base_model=BASE_MODEL)
        try:
            client = DemoClient(up.url, up.create_tenant("bench"))
            satisfied = seed_agents(client, config)
            rl = run_job(client, "rl", "train")
            fast = run_job(client, "fst", "optimize")
            fst = run_job(client, "fst", "train")
        finally:
            up.stop()
    per_step = config.questions_per_step * config.group_size
    fast_calls = int(fast["metrics"].get("metric_calls") or 0)
    arms: dict[str, Any] = {}
    for name, job, offset, label in (
        ("rl", rl, 0, "RL alone"),
        ("fst", fst, fast_calls, "FST (prompt population + RL)"),
    ):
        curves = job["metrics"]["curves"]
        rewards = [float(r or 0.0) for r in curves["reward"]]
        # Answers of the population refreshes count as rollouts used too.
        refreshes = [int(c or 0) for c in curves.get("context_rollouts", [0] * len(rewards))]
        rollouts = [offset + (i + 1) * per_step + refreshes[i] for i in range(len(rewards))]
        assessment = job["result"]["assessment"]
        arms[name] = {
            "label": label,
            "rollouts": rollouts,
            "reward_curve": rewards,
            # None: a step without an update (every group flat), so no KL was measured;
            # a gap in the plot, not a 0.
            "kl_curve": [None if k is None else float(k) for k in curves["kl"]],
            "rollouts_used": rollouts[-1],
            "validation_reward": assessment["candidate_reward"],
            "validation_reward_no_context": assessment["candidate_reward_no_context"],
            "kl_to_base": assessment["kl_to_base"],
            "base_fact_accuracy": assessment["base_fact_accuracy"],
            "fact_accuracy": assessment["candidate_fact_accuracy"],
        }
    fst_assessment = fst["result"]["assessment"]
    arms["prompt"] = {
        "label": "prompt optimisation alone",
        "rollouts_used": fast_calls,
        "validation_reward": fst_assessment["live_reward"],
        "kl_to_base": 0.0,
        "outcome": fast["result"].get("outcome"),
    }
    rl_best = best_moving_average(arms["rl"]["reward_curve"])
    fst_to_rl_best = rollouts_to_reach(
        arms["fst"]["reward_curve"], arms["fst"]["rollouts"], rl_best
    )
    rl_to_rl_best = rollouts_to_reach(arms["rl"]["reward_curve"], arms["rl"]["rollouts"], rl_best)
    kl_ratio = arms["fst"]["kl_to_base"] / max(arms["rl"]["kl_to_base"], 1e-9)
    kl_at_rl_best = {
        arm: kl_when_reached(arms[arm]["reward_curve"], arms[arm]["kl_curve"], rl_best)
        for arm in ("rl", "fst")
    }
    rl_kl, fst_kl = kl_at_rl_best["rl"], kl_at_rl_best["fst"]
    kl_ratio_matched = fst_kl / rl_kl if rl_kl and fst_kl is not None else None
    result = {
        "date": datetime.now(UTC).isoformat(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "config": asdict(config),
        "seed_satisfaction": satisfied,
        "arms": arms,
        "rl_best_training_reward": rl_best,
        "rollouts_rl_to_its_best": rl_to_rl_best,
        "rollouts_fst_to_rl_best": fst_to_rl_best,
        "rollout_ratio_rl_over_fst": (
            rl_to_rl_best / fst_to_rl_best if rl_to_rl_best and fst_to_rl_best else None
        ),
        "kl_ratio_fst_over_rl": kl_ratio,
        "training_kl_at_rl_best": kl_at_rl_best,
        "kl_ratio_fst_over_rl_at_rl_best": kl_ratio_matched,
        "wall_s": time.monotonic() - started,
    }
    print(
        f"\nlearning: users want {config.preference!r}; {config.steps} RL steps of "
        f"{config.questions_per_step} questions x G={config.group_size}; fast-loop budget "
        f"{config.fast_budget}, FST refreshes every {config.refresh_every} steps, solved steps "
        f"{'anchored' if config.anchor_solved_steps else 'skipped'}"
    )
    print(
        f"{'arm':34} {'rollouts':>9} {'val reward':>11} {'no context':>11} {'KL':>8} {'facts':>6}"
    )
    for arm in ("prompt", "rl", "fst"):
        data = arms[arm]
        no_context = data.get("validation_reward_no_context")
        facts = data.get("fact_accuracy", fst_assessment["base_fact_accuracy"])
        print(
            f"{data['label']:34} {data['rollouts_used']:>9} {data['validation_reward']:>11.3f} "
            f"{'-' if no_context is None else f'{no_context:.3f}':>11} {data['kl_to_base']:>8.4f}"
            f" {facts:>6.3f}"
        )
    matched = "-" if kl_ratio_matched is None else f"{kl_ratio_matched:.2f}"
    print(
        f"RL's best training reward {rl_best:.3f}: RL reached it after {rl_to_rl_best} rollouts, "
        f"FST after {fst_to_rl_best} (fast loop included); KL FST / RL at the end "
        f"{kl_ratio:.2f}, in training when each reached it {matched}"
    )
    results = REPO / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    variant = "anchor" if config.anchor_solved_steps else "no-anchor"
    stem = (
        f"learning-{args.preset}-{variant}-seed{config.seed}-"
        f"{datetime.now(UTC).strftime('%Y-%m-%d')}"
    )
    (results / f"{stem}.json").write_text(json.dumps(result, indent=2))
    plot(result, results / f"{stem}.png")
    print(f"wrote benchmarks/results/{stem}.json and .png in {result['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
