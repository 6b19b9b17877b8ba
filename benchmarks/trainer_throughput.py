"""Slow-loop trainer throughput against TRL's GRPOTrainer on the same work.

Same model (SmolLM2-135M-Instruct, fp32, CPU), same LoRA (r=16, alpha 32, all attention and MLP
projections), same loss family (CISPO), same group size, questions per step, answer length,
temperature, KL coefficient and reward (our scorer), measured side by side in one run:
- fastslow: `worker.slow.trainer.train_agent` with the local engine (the embedded default);
  rollouts go through the engine, which batches them;
- TRL 1.16 `GRPOTrainer` (`use_cpu`, `loss_type="cispo"`), HF generation.

Prints median step time, completion tokens generated per second of step time, and the ratios.
Run: .venv/bin/pip install 'fastslow[bench]' && .venv/bin/python benchmarks/trainer_throughput.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backend import migrate  # noqa: E402
from backend.adapters.storage import adapter_store  # noqa: E402
from backend.agents.schemas import SlowLoopSettings  # noqa: E402
from backend.agents.service import create_agent  # noqa: E402
from backend.config import Settings  # noqa: E402
from backend.db import Database  # noqa: E402
from backend.engines.local import LocalEngine  # noqa: E402
from backend.jobs.service import JobReporter, claim_job, create_job  # noqa: E402
from backend.lm import EngineLM  # noqa: E402
from backend.rollouts.models import Rollout  # noqa: E402
from backend.scoring.checks import score_checks  # noqa: E402
from backend.scoring.spec import RewardSpec  # noqa: E402
from backend.simulation import SUPPORT_QUESTIONS  # noqa: E402
from backend.tenants.service import create_tenant  # noqa: E402
from worker.slow.trainer import train_agent  # noqa: E402

BASE_MODEL = Path(
    os.environ.get("FASTSLOW_BASE_MODEL", REPO / "data" / "models" / "SmolLM2-135M-Instruct")
)
REWARD = {"checks": [{"type": "max_words", "limit": 20}], "correction_weight": 0}
SYSTEM = "You are a helpful customer support agent."


def ours(args: argparse.Namespace, tmp: Path) -> list[dict[str, float]]:
    settings = Settings(data_dir=tmp, base_model=str(BASE_MODEL))
    migrate.upgrade(settings.database_url)
    database = Database(settings.database_url)
    engine = LocalEngine(settings.base_model_path, settings.base_model_name)
    with database.session() as session:
        tenant, _ = create_tenant(session, name="bench")
        agent = create_agent(
            session,
            tenant_id=tenant.id,
            slug="support",
            system_prompt=SYSTEM,
            demonstrations=[],
            base_model=None,
            served_base_model=settings.base_model_name,
            reward=RewardSpec.model_validate(REWARD),
            max_tokens_cap=512,
            slow_loop=SlowLoopSettings(
                steps=args.steps,
                questions_per_step=args.questions,
                group_size=args.group,
                max_tokens=args.tokens,
                contexts="live",
                eval_questions=1,
                min_questions=4,
                checkpoint_every=10_000,
                seed=0,
            ),
        )
        for question in SUPPORT_QUESTIONS:
            session.add(
                Rollout(
                    id=f"chatcmpl-{uuid.uuid4().hex}",
                    tenant_id=tenant.id,
                    agent_id=agent.id,
                    prompt_version_id=agent.live_prompt_version_id,
                    adapter_version_id=None,
                    api_key_id=None,
                    messages=[{"role": "user", "content": question}],
                    completion="",
                    finish_reason="stop",
                )
            )
        session.commit()
        job = create_job(
            session,
            tenant_id=tenant.id,
            agent_id=agent.id,
            kind="train",
            params={},
            created_by=None,
        )
        claimed = claim_job(session, job_id=job.id)
        assert claimed is not None
    steps: list[dict[str, float]] = []

    class Recorder(JobReporter):
        def progress(self, step: int, total: int, metrics: dict[str, Any] | None = None) -> None:
            if metrics:
                steps.append({k: v for k, v in metrics.items() if isinstance(v, float)})

    reporter = Recorder(database, claimed.id)
    asyncio.run(
        train_agent(
            database, engine, adapter_store(settings), EngineLM(engine), claimed, reporter, settings
        )
    )
    return steps


def trl(args: argparse.Namespace, tmp: Path) -> list[dict[str, float]]:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl.trainer.grpo_config import GRPOConfig
    from trl.trainer.grpo_trainer import GRPOTrainer

    spec = RewardSpec.model_validate(REWARD)

    def reward(completions: list[Any], prompts: list[Any], **_: Any) -> list[float | None]:
        out: list[float | None] = []
        for prompt, completion in zip(prompts, completions, strict=True):
            answer = completion[0]["content"] if isinstance(completion, list) else completion
            question = prompt[-1]["content"] if isinstance(prompt, list) else prompt
            out.append(score_checks(spec, question=question, answer=answer).score or 0.0)
        return out

    prompts = [
        {"prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]}
        for q in SUPPORT_QUESTIONS
    ]
    steps: list[dict[str, float]] = []
    answers_per_step = args.questions * args.group

    class Timer(TrainerCallback):
        started = 0.0

        def on_step_begin(self, *_: Any, **__: Any) -> None:
            self.started = time.perf_counter()

        def on_step_end(self, *_: Any, **__: Any) -> None:
            steps.append({"step_s": time.perf_counter() - self.started})

        def on_log(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            logs = kwargs.get("logs")
            if logs and steps and "completions/mean_length" in logs:
                per_answer = float(logs["completions/mean_length"])
                steps[-1]["completion_tokens"] = per_answer * answers_per_step

    config = GRPOConfig(
        output_dir=str(tmp / "trl"),
        use_cpu=True,
        max_steps=args.steps,
        per_device_train_batch_size=args.questions * args.group,
        num_generations=args.group,
        max_completion_length=args.tokens,
        temperature=1.0,
        beta=0.04,
        loss_type="cispo",
        learning_rate=2e-4,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=0,
        bf16=False,
    )
    trainer = GRPOTrainer(
        model=str(BASE_MODEL),
        reward_funcs=[reward],
        args=config,
        train_dataset=Dataset.from_list(prompts),
        peft_config=LoraConfig(
            r=16,
            lora_alpha=32,
            lora_dropout=0.0,
            target_modules=[
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
            ],
            task_type="CAUSAL_LM",
        ),
        callbacks=[Timer()],
    )
    trainer.train()
    return steps


def summary(measured: list[dict[str, float]]) -> dict[str, float]:
    step_s = statistics.median(s["step_s"] for s in measured)
    tokens = statistics.median(s.get("completion_tokens", 0.0) for s in measured)
    return {
        "median_step_s": step_s,
        "completion_tokens_per_step": tokens,
        "completion_tokens_per_s": tokens / step_s,
        "steps": len(measured),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--questions", type=int, default=4)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    ours_steps: list[dict[str, float]] = []
    trl_steps: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="fastslow-trainer-") as tmp:
        # Alternate the two in rounds, so a noisy neighbour on a shared machine slows both
        # alike; the first step of each run (warm-up) is not measured.
        for round_ in range(args.rounds):
            ours_steps += ours(args, Path(tmp) / f"ours-{round_}")[1:]
            trl_steps += trl(args, Path(tmp) / f"trl-{round_}")[1:]
    fast = summary(ours_steps)
    baseline = summary(trl_steps)
    ratio_time = baseline["median_step_s"] / fast["median_step_s"]
    ratio_tokens = fast["completion_tokens_per_s"] / baseline["completion_tokens_per_s"]
    print(
        f"\ntrainer throughput: {args.questions} questions x G={args.group}, "
        f"{args.tokens} tokens, LoRA r=16, CISPO, {os.cpu_count()} CPUs"
    )
    print(f"{'':34} {'fastslow':>10} {'TRL GRPO':>10}")
    for name, key in (
        ("median step time (s)", "median_step_s"),
        ("completion tokens per step", "completion_tokens_per_step"),
        ("completion tokens / s", "completion_tokens_per_s"),
    ):
        print(f"{name:34} {fast[key]:>10.2f} {baseline[key]:>10.2f}")
    print(
        f"step time TRL / fastslow: {ratio_time:.2f}x; tokens/s fastslow / TRL: {ratio_tokens:.2f}x"
    )
    results = REPO / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    out = results / f"trainer_throughput-{datetime.now(UTC).strftime('%Y-%m-%d')}.json"
    out.write_text(
        json.dumps(
            {
                "date": datetime.now(UTC).isoformat(),
                "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                "config": vars(args),
                "fastslow": fast,
                "trl": baseline,
                "step_time_ratio_trl_over_fastslow": ratio_time,
                "tokens_per_s_ratio_fastslow_over_trl": ratio_tokens,
            },
            indent=2,
        )
    )
    print(f"wrote {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
