"""One slow-loop run for one agent: LoRA RL on its production questions (Fast-Slow Training),
then an assessment against the live adapter, the gate, and the swap.

    plan (plan.py) -> policy, fresh or from a checkpoint (checkpoints.py)
    -> per step: publish the policy, sample G answers per question, each with a context of the
       population, and score them (rollouts.py) -> update the LoRA (update.py, loss.py)
       -> every few steps refresh the population on the current policy (refresh.py)
       -> every K steps a checkpoint
    -> assess the candidate against the live adapter, gate (assess.py)
    -> register it, and activate it if it passed (registration.py)

A cancelled or crashed run never activates anything; a crashed one resumes from its last
checkpoint. Runs without Celery: `train_agent` takes the database, engine, adapter store, LM
and reporter.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import torch

from backend.adapters.activation import adapter_ref
from backend.adapters.storage import AdapterStore, adapter_validator
from backend.config import Settings
from backend.db import Database
from backend.engines import AdapterRef, Engine
from backend.errors import Invalid
from backend.jobs.contract import JobOutcome, JobReporter
from backend.jobs.models import Job
from backend.lm import TextLM
from backend.scoring.scorer import Scorer
from worker.slow.assess import assess, gate
from worker.slow.checkpoints import Checkpoints, TrainingState
from worker.slow.plan import Plan, load_plan
from worker.slow.policy import Policy
from worker.slow.refresh import refresh_contexts, refresh_due
from worker.slow.registration import register_and_activate, stage_candidate
from worker.slow.rollouts import publish, retire, sample_groups, score_groups
from worker.slow.update import reward_metrics, update


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
    state = TrainingState.restore(
        checkpoints.snapshot(),
        seed=s.seed if s.seed is not None else job.id.int,
        contexts=plan.contexts,
    )
    policy = await _policy(plan, store, checkpoints, state, app_settings)
    reporter.log(
        f"{'resuming at step ' + str(state.step) if state.step else 'training'}: "
        f"{len(plan.train)} train / {len(plan.validation)} validation questions, "
        f"{len(plan.contexts)} contexts ({s.contexts}), {s.algorithm}, G={s.group_size}"
    )

    previous: AdapterRef | None = None
    try:
        while state.step < s.steps:
            reporter.check_cancelled()
            metrics, previous = await _step(
                engine, policy, plan, scorer, state, job, previous, app_settings
            )
            state.step += 1
            if refresh_due(s, state.step):
                state.contexts, answers = await refresh_contexts(
                    engine, lm, plan, state.contexts, previous, reporter, state.rng.randrange(2**31)
                )
                state.context_rollouts += answers
            metrics["context_rollouts"] = float(state.context_rollouts)
            state.record(metrics)
            reporter.progress(state.step, s.steps, {**metrics, "curves": state.curves})
            if state.step % s.checkpoint_every == 0 and state.step < s.steps:
                await asyncio.to_thread(checkpoints.save, policy, state)
    finally:
        if previous is not None:
            await retire(engine, previous)

    reporter.check_cancelled()
    staging = await stage_candidate(policy, store, app_settings)
    candidate = AdapterRef(f"candidate-{job.id.hex[:12]}", str(staging))
    live = await _live_lora(plan, store)
    assessment = await assess(engine, policy, plan, scorer, candidate, live)
    reporter.check_cancelled()
    metrics = assessment.as_dict()
    decision = gate(metrics, s)
    reporter.log(f"assessment: {json.dumps({k: round(v, 4) for k, v in metrics.items()})}")
    outcome = await register_and_activate(
        database,
        engine,
        store,
        plan,
        job,
        reporter,
        app_settings,
        staging=staging,
        assessment=assessment,
        decision=decision,
        curves=state.curves,
    )
    checkpoints.remove()
    return outcome


async def _live_lora(plan: Plan, store: AdapterStore) -> AdapterRef | None:
    return await asyncio.to_thread(adapter_ref, plan.live_adapter, store)


async def _policy(
    plan: Plan,
    store: AdapterStore,
    checkpoints: Checkpoints,
    state: TrainingState,
    app_settings: Settings,
) -> Policy:
    """The policy a run trains: the checkpointed adapter when resuming, else the live adapter,
    else a fresh LoRA."""
    s = plan.settings
    live = await _live_lora(plan, store)
    resume = checkpoints.adapter(state)
    if live is not None and resume is None:
        # The live adapter may be a tenant's upload: checked again before peft reads it.
        await asyncio.to_thread(adapter_validator(app_settings).validate, Path(live.path))
    if s.seed is not None:
        torch.manual_seed(s.seed)  # the LoRA's initial weights
    return await asyncio.to_thread(
        Policy,
        app_settings.base_model_path,
        s,
        init_adapter=resume or (Path(live.path) if live else None),
        optimizer_dir=checkpoints.latest if resume else None,
        device=app_settings.torch_device,
    )


async def _step(
    engine: Engine,
    policy: Policy,
    plan: Plan,
    scorer: Scorer,
    state: TrainingState,
    job: Job,
    previous: AdapterRef | None,
    app_settings: Settings,
) -> tuple[dict[str, float], AdapterRef]:
    """One step: the policy published under a name for this step only (under the adapter
    cache, which a vLLM server on another host can read), rollouts, scores, the update."""
    started = time.perf_counter()
    serving = app_settings.adapter_cache_path / "training" / job.id.hex / f"step-{state.step}"
    current = await publish(engine, policy, serving, f"train-{job.id.hex[:12]}-{state.step}")
    if previous is not None:
        await retire(engine, previous)
    groups = await sample_groups(
        engine, plan.train, state.contexts, plan.settings, state.rng, current
    )
    generated = time.perf_counter()
    groups = await score_groups(scorer, groups)
    metrics = {**reward_metrics(groups), "generation_s": generated - started}
    metrics.update(await update(policy, groups, plan.settings))
    elapsed = time.perf_counter() - started
    metrics["step_s"] = elapsed
    metrics["tokens_per_s"] = (metrics["completion_tokens"] + metrics["trained_tokens"]) / elapsed
    return metrics, current
