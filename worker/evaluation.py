"""Evaluate an agent's live versions: answer a set of questions the way production would
(live prompt and adapter, greedy decoding) and score the answers with the agent's reward spec.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from backend.adapters.activation import adapter_ref
from backend.adapters.storage import AdapterStore
from backend.agents.models import Agent
from backend.agents.service import agent_by_id
from backend.db import Database
from backend.engines import Engine, GenerationRequest, SamplingParams
from backend.errors import Invalid
from backend.jobs.contract import EvaluateParams, JobOutcome, JobReporter
from backend.jobs.models import Job
from backend.prompts.context import Context
from backend.rollouts.models import Rollout
from backend.scoring.checks import score_checks
from backend.scoring.spec import RewardSpec

ANSWER_PREVIEW_CHARS = 2_000


def recent_questions(database: Database, agent: Agent, limit: int) -> list[str]:
    """The agent's most recent distinct questions (last user message of each rollout)."""
    seen: dict[str, None] = {}
    with database.session() as session:
        query = (
            select(Rollout.messages)
            .where(Rollout.agent_id == agent.id, Rollout.tenant_id == agent.tenant_id)
            .order_by(Rollout.created_at.desc())
            .limit(limit * 5)
        )
        for messages in session.scalars(query):
            users = [m["content"] for m in messages if m.get("role") == "user"]
            if users and users[-1].strip():
                seen.setdefault(users[-1], None)
            if len(seen) >= limit:
                break
    return list(seen)


async def evaluate_agent(
    database: Database,
    engine: Engine,
    store: AdapterStore,
    job: Job,
    params: EvaluateParams,
    reporter: JobReporter,
) -> JobOutcome:
    def load_agent() -> Agent:
        with database.session() as session:
            agent = agent_by_id(session, tenant_id=job.tenant_id, agent_id=job.agent_id)
            return agent

    agent = await run_in_threadpool(load_agent)
    questions = [p for p in (params.prompts or []) if p.strip()]
    if not questions:
        questions = await run_in_threadpool(recent_questions, database, agent, params.limit)
    if not questions:
        raise Invalid("nothing to evaluate: no prompts given and the agent has no rollouts yet")
    spec = RewardSpec.model_validate(agent.reward or {})
    context = Context.of(agent.live_prompt)
    sampling = SamplingParams(
        max_tokens=min(params.max_tokens, agent.max_tokens_cap), temperature=0.0
    )
    adapter = await asyncio.to_thread(adapter_ref, agent.live_adapter, store)
    reporter.log(
        f"evaluating {len(questions)} questions with prompt v{agent.live_prompt_version} and "
        f"adapter {agent.live_adapter_version or 'none'}"
    )

    items: list[dict[str, Any]] = []
    for step, question in enumerate(questions, start=1):
        reporter.check_cancelled()
        messages = context.messages([{"role": "user", "content": question}])
        started = time.perf_counter()
        generation = await engine.generate(GenerationRequest(messages, sampling, adapter))
        latency_ms = int((time.perf_counter() - started) * 1000)
        scored = score_checks(spec, question=question, answer=generation.text)
        items.append(
            {
                "question": question,
                "answer": generation.text[:ANSWER_PREVIEW_CHARS],
                "score": scored.score,
                "failed_checks": [o.check for o in scored.outcomes if not o.passed],
                "completion_tokens": generation.completion_tokens,
                "latency_ms": latency_ms,
            }
        )
        reporter.progress(step, len(questions), _metrics(items, spec))
    return JobOutcome(
        result={
            "prompt_version": agent.live_prompt_version,
            "adapter_version": agent.live_adapter_version,
            "items": items,
        },
        metrics=_metrics(items, spec),
    )


def _metrics(items: list[dict[str, Any]], spec: RewardSpec) -> dict[str, Any]:
    metrics: dict[str, Any] = {
        "answered": len(items),
        "mean_completion_tokens": statistics.fmean(i["completion_tokens"] for i in items),
        "mean_latency_ms": statistics.fmean(i["latency_ms"] for i in items),
    }
    scores = [i["score"] for i in items if i["score"] is not None]
    if scores:
        metrics["mean_score"] = statistics.fmean(scores)
    for check in {c.type for c in spec.checks}:
        failed = sum(1 for i in items if check in i["failed_checks"])
        metrics[f"pass_rate.{check}"] = 1 - failed / len(items)
    return metrics
