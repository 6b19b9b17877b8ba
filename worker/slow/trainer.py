"""One slow-loop run for one agent: LoRA RL on its production questions (Fast-Slow Training),
then an assessment against the live adapter, the gate, and the swap.

Per step: the current policy is published to the engine under a training-only name; G answers
per question are sampled through the engine, each with a context drawn from the fast loop's
population (mixed within a group: that is FST); the scorer rewards them; the objective in
`loss.py` updates the LoRA. Checkpoints every K steps make a run resumable after a crash; a
cancelled or crashed run never activates anything.

Runs without Celery: `train_agent` takes the database, engine, adapter store, LM and reporter.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import shutil
import statistics
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from sqlalchemy import select

from backend.adapters.activation import activate_adapter, adapter_ref
from backend.adapters.models import AdapterSource, AdapterVersion
from backend.adapters.service import register_adapter
from backend.adapters.storage import AdapterStore, adapter_validator
from backend.agents.models import Agent
from backend.agents.schemas import FastLoopSettings, SlowLoopSettings
from backend.agents.service import agent_by_id, fast_loop_settings, slow_loop_settings
from backend.config import Settings
from backend.db import Database
from backend.engines import (
    AdapterRef,
    ChatMessage,
    Engine,
    EngineError,
    Generation,
    GenerationRequest,
    SamplingParams,
)
from backend.errors import DomainError, Invalid
from backend.jobs.models import Job
from backend.jobs.service import JobReporter
from backend.lm import TextLM
from backend.prompts.models import PromptVersion
from backend.runtime.agent import build_context
from backend.scoring.scorer import Scorer
from backend.scoring.spec import RewardSpec
from worker.fast.adapter import decode_demonstrations
from worker.fast.data import Example, load_examples
from worker.fast.optimizer import search_population
from worker.jobs import JobOutcome
from worker.slow.base_skills import FACTS, TEXT
from worker.slow.data import Question, load_questions, split
from worker.slow.loss import group_advantages
from worker.slow.policy import Policy, Sequence

logger = logging.getLogger(__name__)

FACT_TOKENS = 16


@dataclass(frozen=True)
class Context:
    instructions: str
    demonstrations: list[ChatMessage]
    prompt_version: int | None


@dataclass
class Plan:
    """Everything a run needs, read from the database once."""

    agent_id: uuid.UUID
    tenant_id: uuid.UUID
    slug: str
    settings: SlowLoopSettings
    spec: RewardSpec
    train: list[Question]
    validation: list[Question]
    contexts: list[Context]
    live_context: Context
    live_adapter: AdapterVersion | None
    # For population refreshes (FST interleaving): the rated questions and how to search.
    examples: list[Example]
    fast_loop: FastLoopSettings
    max_tokens_cap: int


def _context(version: PromptVersion | None) -> Context:
    if version is None:
        return Context("", [], None)
    turns: list[ChatMessage] = [
        {"role": t["role"], "content": t["content"]} for t in version.demonstrations
    ]
    return Context(version.instructions, turns, version.version)


def load_plan(database: Database, job: Job) -> Plan:
    with database.session() as session:
        agent = agent_by_id(session, tenant_id=job.tenant_id, agent_id=job.agent_id)
        settings = slow_loop_settings(agent)
        questions = load_questions(
            session, tenant_id=agent.tenant_id, agent_id=agent.id, limit=settings.max_questions
        )
        if len(questions) < settings.min_questions:
            raise Invalid(
                f"not enough questions to train on: {len(questions)} distinct questions in the "
                f"agent's rollouts, {settings.min_questions} needed"
            )
        train, validation = split(questions, settings.validation_fraction)
        live = _context(agent.live_prompt)
        if settings.contexts == "population" and agent.population:
            ids = [uuid.UUID(m["prompt_version_id"]) for m in agent.population]
            rows = session.scalars(
                select(PromptVersion).where(
                    PromptVersion.id.in_(ids), PromptVersion.tenant_id == agent.tenant_id
                )
            ).all()
            contexts = [_context(row) for row in rows] or [live]
        elif settings.contexts == "none":
            contexts = [Context("", [], None)]
        else:
            contexts = [live]
        fast = fast_loop_settings(agent)
        examples = (
            load_examples(
                session, tenant_id=agent.tenant_id, agent_id=agent.id, limit=fast.max_examples
            )
            if settings.refresh_every and settings.contexts == "population"
            else []
        )
        return Plan(
            agent.id,
            agent.tenant_id,
            agent.slug,
            settings,
            RewardSpec.model_validate(agent.reward or {}),
            train,
            validation,
            contexts,
            live,
            agent.live_adapter,
            examples,
            fast,
            agent.max_tokens_cap,
        )


class Checkpoints:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.latest = root / "latest"

    def state(self) -> dict[str, Any] | None:
        path = self.latest / "state.json"
        state: dict[str, Any] | None = json.loads(path.read_text()) if path.exists() else None
        return state

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


async def train_agent(
    database: Database,
    engine: Engine,
    store: AdapterStore,
    lm: TextLM,
    job: Job,
    reporter: JobReporter,
    app_settings: Settings,
) -> JobOutcome:
    plan = await asyncio.to_thread(load_plan, database, job)
    s = plan.settings
    scorer = Scorer(plan.spec, judge_lm=lm)
    if not scorer.applies(has_correction=any(q.correction for q in plan.train)):
        raise Invalid("nothing to reward: the agent's reward spec has no checks or judge")
    checkpoints = Checkpoints(app_settings.data_dir / "checkpoints" / job.id.hex)
    state = checkpoints.state() or {"step": 0, "curves": {}, "rng": None}
    live_dir = (
        await asyncio.to_thread(adapter_ref, plan.live_adapter, store)
        if plan.live_adapter
        else None
    )
    resume = checkpoints.latest / "adapter" if state["step"] else None
    if live_dir is not None and resume is None:
        # The live adapter may be a tenant's upload: checked again before peft reads it.
        await asyncio.to_thread(adapter_validator(app_settings).validate, Path(live_dir.path))
    if s.seed is not None:
        torch.manual_seed(s.seed)  # the LoRA's initial weights
    policy = await asyncio.to_thread(
        Policy,
        app_settings.base_model_path,
        s,
        init_adapter=resume or (Path(live_dir.path) if live_dir else None),
        optimizer_dir=checkpoints.latest if resume else None,
        device=app_settings.torch_device,
    )
    rng = random.Random(s.seed if s.seed is not None else job.id.int)
    if state["rng"] is not None:
        version, internal, gauss = state["rng"]
        rng.setstate((version, tuple(internal), gauss))
    reporter.log(
        f"{'resuming at step ' + str(state['step']) if resume else 'training'}: "
        f"{len(plan.train)} train / {len(plan.validation)} validation questions, "
        f"{len(plan.contexts)} contexts ({s.contexts}), {s.algorithm}, G={s.group_size}"
    )
    curves: dict[str, list[float | None]] = state["curves"]
    if state.get("contexts"):
        plan.contexts = [Context(c[0], c[1], c[2]) for c in state["contexts"]]
    context_rollouts = int(state.get("context_rollouts", 0))
    previous: AdapterRef | None = None
    try:
        for step in range(state["step"], s.steps):
            reporter.check_cancelled()
            metrics, previous = await _step(
                engine, policy, plan, scorer, rng, job, step, previous, app_settings
            )
            if _refresh_due(s, step):
                context_rollouts += await _refresh_contexts(
                    engine, lm, plan, previous, reporter, rng.randrange(2**31)
                )
            metrics["context_rollouts"] = float(context_rollouts)
            for name in ("reward", "reward_std", "kl", "loss", "tokens_per_s", "context_rollouts"):
                curves.setdefault(name, []).append(metrics.get(name))
            reporter.progress(step + 1, s.steps, {**metrics, "curves": curves})
            if (step + 1) % s.checkpoint_every == 0 and step + 1 < s.steps:
                snapshot = {
                    "step": step + 1,
                    "curves": curves,
                    "rng": list(rng.getstate()),
                    "contexts": [
                        [c.instructions, c.demonstrations, c.prompt_version] for c in plan.contexts
                    ],
                    "context_rollouts": context_rollouts,
                }
                await asyncio.to_thread(policy.save_checkpoint, checkpoints.latest, snapshot)
    finally:
        if previous is not None:
            await _quietly_unload(engine, previous)

    outcome = await _assess_and_gate(
        database, engine, store, policy, plan, scorer, job, reporter, app_settings, curves
    )
    checkpoints.remove()
    return outcome


def _refresh_due(s: SlowLoopSettings, step: int) -> bool:
    return (
        s.refresh_every > 0
        and s.contexts == "population"
        and (step + 1) % s.refresh_every == 0
        and step + 1 < s.steps
    )


async def _refresh_contexts(
    engine: Engine,
    lm: TextLM,
    plan: Plan,
    adapter: AdapterRef,
    reporter: JobReporter,
    seed: int,
) -> int:
    """FST interleaving: a fast-loop round answered by the current policy re-fits the
    population to what the weights now do. Returns the answers it generated."""
    best = plan.contexts[0]
    try:
        search = await search_population(
            engine=engine,
            lm=lm,
            spec=plan.spec,
            examples=plan.examples,
            seed_instructions=best.instructions,
            seed_demonstrations=best.demonstrations,
            adapter=adapter,
            settings=plan.fast_loop.model_copy(update={"budget": plan.settings.refresh_budget}),
            max_tokens=min(plan.settings.max_tokens, plan.max_tokens_cap),
            reporter=reporter,
            seed=seed,
            report_progress=False,
        )
    except Invalid as exc:
        reporter.log(f"population not refreshed: {exc}")
        return 0
    plan.contexts = [
        Context(m.instructions, decode_demonstrations(m.demonstrations), None)
        for m in search.members
    ]
    reporter.log(
        f"population refreshed on the current policy: {len(plan.contexts)} contexts, best "
        f"validation {search.metrics['best_score']:.3f} (seed {search.seed_score:.3f})"
    )
    return int(search.metrics["metric_calls"])


async def _step(
    engine: Engine,
    policy: Policy,
    plan: Plan,
    scorer: Scorer,
    rng: random.Random,
    job: Job,
    step: int,
    previous: AdapterRef | None,
    app_settings: Settings,
) -> tuple[dict[str, float], AdapterRef]:
    s = plan.settings
    started = time.perf_counter()
    # Publish the current policy to the engine under a name used for this step only.
    # Under the adapter cache: a vLLM server on another host must be able to read it.
    serving = app_settings.adapter_cache_path / "training" / job.id.hex / f"step-{step}"
    await asyncio.to_thread(policy.save_adapter, serving)
    current = AdapterRef(f"train-{job.id.hex[:12]}-{step}", str(serving))
    await engine.load_adapter(current)
    if previous is not None:
        await _quietly_unload(engine, previous)

    questions = rng.sample(plan.train, min(s.questions_per_step, len(plan.train)))
    sampling = SamplingParams(
        max_tokens=s.max_tokens, temperature=s.temperature, seed=rng.randrange(2**31)
    )
    prompts: list[tuple[Question, list[ChatMessage]]] = []
    for question in questions:
        for _ in range(s.group_size):
            context = rng.choice(plan.contexts)  # mixed within the group: FST
            messages = build_context(
                context.instructions, context.demonstrations, question.conversation
            )
            prompts.append((question, messages))
    generations: list[Generation] = await asyncio.gather(
        *(engine.generate(GenerationRequest(m, sampling, current)) for _, m in prompts)
    )
    generated = time.perf_counter()
    rewards = []
    for (question, _), generation in zip(prompts, generations, strict=True):
        scored = await scorer.score(
            question=question.text, answer=generation.text, correction=question.correction
        )
        rewards.append(scored.value or 0.0)
    reward_tensor = torch.tensor(rewards)
    advantages = group_advantages(reward_tensor, s.group_size)
    groups = reward_tensor.view(-1, s.group_size)
    flat_groups = float((groups.std(dim=1, unbiased=False) == 0).float().mean())
    metrics: dict[str, float] = {
        "reward": float(reward_tensor.mean()),
        "reward_std": float(reward_tensor.std(unbiased=False)),
        "flat_groups": flat_groups,
        "completion_tokens": float(sum(g.completion_tokens for g in generations)),
        "generation_s": generated - started,
    }
    kind = step_kind(rewards, advantages, s)
    sequences = [
        Sequence(messages, g.text, g.finish_reason == "stop")
        for (_, messages), g in zip(prompts, generations, strict=True)
    ]
    if kind == "reward":
        metrics.update(await asyncio.to_thread(policy.update, sequences, advantages))
    elif kind == "anchor":
        metrics.update(await asyncio.to_thread(policy.anchor, sequences))
        metrics["anchored"] = 1.0
    else:  # no signal: no update (the step still counts)
        metrics.update(loss=0.0, trained_tokens=0.0)
    elapsed = time.perf_counter() - started
    metrics["step_s"] = elapsed
    metrics["tokens_per_s"] = (metrics["completion_tokens"] + metrics["trained_tokens"]) / elapsed
    return metrics, current


def step_kind(
    rewards: list[float], advantages: torch.Tensor, settings: SlowLoopSettings
) -> Literal["reward", "anchor", "none"]:
    """What a step trains on: the objective where some group has a reward spread; the KL term
    alone (Policy.anchor) where every answer earned the full reward, so nothing is left to
    learn; nothing where all answers failed alike: with Adam an anchor step is as large as a
    reward step, and anchoring those undid the rare signal RL alone gets at the start
    (benchmarks/learning.py: RL alone then never learned the rule)."""
    if advantages.abs().sum() > 0:
        return "reward"
    if settings.anchor_solved_steps and min(rewards) >= 1.0:
        return "anchor"
    return "none"


async def _quietly_unload(engine: Engine, ref: AdapterRef) -> None:
    try:
        await engine.unload_adapter(ref.name)
    except EngineError as exc:
        logger.warning("could not unload %s: %s", ref.name, exc)
    shutil.rmtree(ref.path, ignore_errors=True)


async def _greedy(
    engine: Engine,
    items: list[list[ChatMessage]],
    adapter: AdapterRef | None,
    max_tokens: int,
) -> list[Generation]:
    sampling = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    return list(
        await asyncio.gather(
            *(engine.generate(GenerationRequest(m, sampling, adapter)) for m in items)
        )
    )


async def _mean_reward(
    scorer: Scorer, questions: list[Question], generations: list[Generation]
) -> float:
    values = []
    for question, generation in zip(questions, generations, strict=True):
        scored = await scorer.score(
            question=question.text, answer=generation.text, correction=question.correction
        )
        values.append(scored.value or 0.0)
    return statistics.fmean(values) if values else 0.0


async def assess(
    engine: Engine,
    policy: Policy,
    plan: Plan,
    scorer: Scorer,
    candidate: AdapterRef,
    live: AdapterRef | None,
) -> dict[str, float]:
    """Candidate adapter against the live one (or the base model) on validation questions:
    reward with the live context and with none, KL to the base, base-skill retention."""
    s = plan.settings
    questions = plan.validation[: s.eval_questions]
    ctx = plan.live_context
    with_context = [
        build_context(ctx.instructions, ctx.demonstrations, q.conversation) for q in questions
    ]
    bare = [q.conversation for q in questions]
    results: dict[str, float] = {}
    for name, adapter in (("candidate", candidate), ("live", live)):
        answers = await _greedy(engine, with_context, adapter, s.max_tokens)
        results[f"{name}_reward"] = await _mean_reward(scorer, questions, answers)
        plain = await _greedy(engine, bare, adapter, s.max_tokens)
        results[f"{name}_reward_no_context"] = await _mean_reward(scorer, questions, plain)
        if name == "candidate":
            sequences = [
                Sequence(m, a.text, a.finish_reason == "stop")
                for m, a in zip(with_context, answers, strict=True)
            ]
            results["kl_to_base"] = await asyncio.to_thread(
                policy.kl_to_base, policy.batch(sequences)
            )
    facts: list[list[ChatMessage]] = [[{"role": "user", "content": q}] for q, _ in FACTS]
    for name, adapter in (("candidate", candidate), ("base", None)):
        answers = await _greedy(engine, facts, adapter, FACT_TOKENS)
        correct = [
            any(ok in a.text.lower() for ok in accepted)
            for a, (_, accepted) in zip(answers, FACTS, strict=True)
        ]
        results[f"{name}_fact_accuracy"] = sum(correct) / len(correct)
    results["candidate_perplexity"] = await asyncio.to_thread(policy.perplexity, TEXT, adapter=True)
    results["base_perplexity"] = await asyncio.to_thread(policy.perplexity, TEXT, adapter=False)
    results["retention_drop"] = results["base_fact_accuracy"] - results["candidate_fact_accuracy"]
    return results


def gate(metrics: dict[str, float], settings: SlowLoopSettings) -> tuple[bool, str]:
    gain = metrics["candidate_reward"] - metrics["live_reward"]
    if gain <= 0 or gain < settings.margin:
        return (
            False,
            f"reward {metrics['candidate_reward']:.3f} does not beat the live "
            f"{metrics['live_reward']:.3f} by the margin {settings.margin}",
        )
    if metrics["kl_to_base"] > settings.kl_budget:
        return False, f"KL to the base {metrics['kl_to_base']:.3f} exceeds {settings.kl_budget}"
    if metrics["retention_drop"] > settings.retention_tolerance:
        return (
            False,
            f"base-skill accuracy dropped {metrics['retention_drop']:.3f} "
            f"(tolerance {settings.retention_tolerance})",
        )
    return True, f"reward {metrics['live_reward']:.3f} -> {metrics['candidate_reward']:.3f}"


async def _assess_and_gate(
    database: Database,
    engine: Engine,
    store: AdapterStore,
    policy: Policy,
    plan: Plan,
    scorer: Scorer,
    job: Job,
    reporter: JobReporter,
    app_settings: Settings,
    curves: dict[str, list[float | None]],
) -> JobOutcome:
    reporter.check_cancelled()
    staging = store.staging_dir()
    await asyncio.to_thread(policy.save_adapter, staging)
    # The trainer's adapters meet the same rules as uploads, before any engine loads them.
    try:
        await asyncio.to_thread(adapter_validator(app_settings).sanitize, staging)
    except Invalid:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    candidate = AdapterRef(f"candidate-{job.id.hex[:12]}", str(staging))
    live = (
        await asyncio.to_thread(adapter_ref, plan.live_adapter, store)
        if plan.live_adapter
        else None
    )
    try:
        await engine.load_adapter(candidate)
        metrics = await assess(engine, policy, plan, scorer, candidate, live)
    finally:
        await _quietly_unload_name(engine, candidate.name)
    reporter.check_cancelled()
    promote, reason = gate(metrics, plan.settings)
    reporter.log(f"assessment: {json.dumps({k: round(v, 4) for k, v in metrics.items()})}")

    def record() -> AdapterVersion:
        with database.session() as session:
            agent = session.scalars(select(Agent).where(Agent.id == plan.agent_id)).unique().one()
            return register_adapter(
                session,
                store,
                agent=agent,
                staging=staging,
                source=AdapterSource.TRAINING,
                validator=adapter_validator(app_settings),
                note=f"slow loop ({plan.settings.algorithm}, {plan.settings.contexts} contexts)",
                metrics={**metrics, "curves": curves, "gate": reason},
                parent_id=plan.live_adapter.id if plan.live_adapter else None,
                job_id=job.id,
            )

    row = await asyncio.to_thread(record)
    outcome: dict[str, Any] = {
        "adapter_version": row.version,
        "assessment": metrics,
        "reason": reason,
        "outcome": "kept",
    }
    if promote:
        try:
            await activate_adapter(
                database,
                engine,
                store,
                tenant_id=plan.tenant_id,
                slug=plan.slug,
                version=row.version,
                reason=f"slow loop: {reason}",
                actor_key_id=None,
                unload_grace_s=None,
            )
            outcome["outcome"] = "promoted"
        except DomainError as exc:
            outcome["reason"] = f"passed the gate but could not be activated: {exc.message}"
    reporter.log(f"adapter v{row.version}: {outcome['outcome']} ({outcome['reason']})")
    return JobOutcome(result=outcome, metrics={**metrics, "curves": curves})


async def _quietly_unload_name(engine: Engine, name: str) -> None:
    try:
        await engine.unload_adapter(name)
    except EngineError as exc:
        logger.warning("could not unload %s: %s", name, exc)
