"""Slow-loop trainer throughput against TRL's GRPOTrainer on the same work.

Same model (SmolLM2-135M-Instruct, fp32, CPU), same LoRA (r=16, alpha 32, all attention and MLP
projections), same loss family (CISPO), same group size, questions per step, answer length,
temperature, KL coefficient and reward (our scorer), measured side by side in one run:
- fastslow: `worker.slow.trainer.train_agent` with the local engine (the embedded default);
  rollouts go through the engine, which batches them;
- TRL 1.16 `GRPOTrainer` (`use_cpu`, `loss_type="cispo"`), HF generation.

Prints median step time, completion tokens generated per second of step time, and the ratios.
Ours takes no optimiser step where every group's rewards are equal (nothing to learn, see
`worker.slow.update.step_kind`); TRL trains on every step. So that both sides are measured on
the same work, ours counts only the steps it trained on; the skipped ones are reported apart.
Run: .venv/bin/pip install 'fastslow[bench]' && .venv/bin/python benchmarks/trainer_throughput.py

On a GPU both run there in bf16 (`FASTSLOW_TORCH_DEVICE=auto`; TRL without `use_cpu`).
`--random-init 1.7b` measures a model of SmolLM2-1.7B's shape with random weights (only the
tokenizer and config travel, no weights are downloaded); its answers are noise, so the reward
is then "contains a digit", which such noise meets about half the time (groups keep variance).
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
from backend.engines import build_engine  # noqa: E402
from backend.jobs.service import DatabaseReporter, claim_job, create_job  # noqa: E402
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
REWARD: dict[str, Any] = {"checks": [{"type": "max_words", "limit": 20}], "correction_weight": 0}
NOISE_REWARD: dict[str, Any] = {
    "checks": [{"type": "regex", "pattern": "[0-9]"}],
    "correction_weight": 0,
}
# Shapes of the SmolLM2 family (Llama architecture, same tokenizer).
SHAPES: dict[str, dict[str, int]] = {
    "135m": {},
    "360m": {
        "hidden_size": 960,
        "intermediate_size": 2560,
        "num_hidden_layers": 32,
        "num_attention_heads": 15,
        "num_key_value_heads": 5,
    },
    "1.7b": {
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 24,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
    },
}


def random_model(shape: str, out: Path) -> Path:
    """A checkpoint of SmolLM2's tokenizer and config with `shape` and random weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(BASE_MODEL)
    for key, value in SHAPES[shape].items():
        setattr(config, key, value)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)  # type: ignore[no-untyped-call]
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(BASE_MODEL).save_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    print(f"random {shape} model: {params / 1e6:.0f}M parameters at {out}")
    return out


SYSTEM = "You are a helpful customer support agent."


def ours(args: argparse.Namespace, tmp: Path, model: Path) -> list[dict[str, float]]:
    settings = Settings(data_dir=tmp, base_model=str(model))
    migrate.upgrade(settings.database_url)
    database = Database(settings.database_url)
    engine = build_engine(settings)  # the local engine, as the embedded platform builds it
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
            reward=RewardSpec.model_validate(args.reward),
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

    class Recorder(DatabaseReporter):
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


def trl(args: argparse.Namespace, tmp: Path, model: Path) -> list[dict[str, float]]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl.trainer.grpo_config import GRPOConfig
    from trl.trainer.grpo_trainer import GRPOTrainer

    spec = RewardSpec.model_validate(args.reward)
    gpu = torch.cuda.is_available()

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
        use_cpu=not gpu,
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
        bf16=gpu,
        model_init_kwargs={"dtype": torch.bfloat16 if gpu else torch.float32},
    )
    trainer = GRPOTrainer(
        model=str(model),
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
    parser.add_argument("--random-init", choices=sorted(SHAPES), default=None)
    args = parser.parse_args()
    args.reward = NOISE_REWARD if args.random_init else REWARD
    ours_steps: list[dict[str, float]] = []
    trl_steps: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="fastslow-trainer-") as tmp:
        model = BASE_MODEL
        if args.random_init:
            model = random_model(args.random_init, Path(tmp) / f"random-{args.random_init}")
        # Alternate the two in rounds, so a noisy neighbour on a shared machine slows both
        # alike; the first step of each run (warm-up) is not measured.
        for round_ in range(args.rounds):
            ours_steps += ours(args, Path(tmp) / f"ours-{round_}", model)[1:]
            trl_steps += trl(args, Path(tmp) / f"trl-{round_}", model)[1:]
    trained = [s for s in ours_steps if s.get("trained_tokens", 0.0) > 0]
    skipped = [s for s in ours_steps if s.get("trained_tokens", 0.0) == 0]
    if not trained:
        raise SystemExit("no step of ours had a reward spread to train on: raise --steps")
    fast = summary(trained)
    fast["skipped_steps"] = len(skipped)
    if skipped:
        fast["median_skipped_step_s"] = statistics.median(s["step_s"] for s in skipped)
    baseline = summary(trl_steps)
    ratio_time = baseline["median_step_s"] / fast["median_step_s"]
    ratio_tokens = fast["completion_tokens_per_s"] / baseline["completion_tokens_per_s"]
    import torch

    where = torch.cuda.get_device_name() if torch.cuda.is_available() else f"{os.cpu_count()} CPUs"
    model_name = f"random {args.random_init}" if args.random_init else "SmolLM2-135M"
    print(
        f"\ntrainer throughput: {model_name}, {args.questions} questions x G={args.group}, "
        f"{args.tokens} tokens, LoRA r=16, CISPO, {where}"
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
        f" (over the {fast['steps']} steps ours trained on; {len(skipped)} without a reward"
        " spread skipped the update"
        + (f", median {fast['median_skipped_step_s']:.2f} s)" if skipped else ")")
    )
    results = REPO / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    kind = (f"-{args.random_init}" if args.random_init else "") + (
        "-gpu" if torch.cuda.is_available() else ""
    )
    out = results / f"trainer_throughput{kind}-{datetime.now(UTC).strftime('%Y-%m-%d')}.json"
    out.write_text(
        json.dumps(
            {
                "date": datetime.now(UTC).isoformat(),
                "machine": {
                    "cpus": os.cpu_count(),
                    "platform": platform.platform(),
                    "device": where,
                },
                "config": {k: v for k, v in vars(args).items() if k != "reward"},
                "reward": args.reward,
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
