"""The end of a slow-loop run: the candidate adapter against the live one (or the base model) on
validation questions, and the gate (worker/promotion.py) that decides whether it is promoted."""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
from collections.abc import Mapping
from dataclasses import dataclass

from backend.agents.schemas import SlowLoopSettings
from backend.engines import (
    AdapterRef,
    ChatMessage,
    Engine,
    Generation,
    GenerationRequest,
    SamplingParams,
)
from backend.scoring.scorer import Scorer
from worker.dataset import Question
from worker.promotion import Condition, Decision, decide
from worker.slow.base_skills import FACTS, TEXT
from worker.slow.plan import Plan
from worker.slow.policy import Policy, Sequence
from worker.slow.rollouts import quietly_unload

FACT_TOKENS = 16


@dataclass(frozen=True)
class Assessment:
    candidate_reward: float  # greedy answers with the live context
    candidate_reward_no_context: float
    kl_to_base: float  # mean per-token KL of the candidate's answers
    live_reward: float
    live_reward_no_context: float
    candidate_fact_accuracy: float  # base skills (base_skills.py)
    base_fact_accuracy: float
    candidate_perplexity: float
    base_perplexity: float

    @property
    def retention_drop(self) -> float:
        return self.base_fact_accuracy - self.candidate_fact_accuracy

    def as_dict(self) -> dict[str, float]:
        """The metrics as stored and gated on."""
        return {**dataclasses.asdict(self), "retention_drop": self.retention_drop}


async def _greedy(
    engine: Engine, items: list[list[ChatMessage]], lora: AdapterRef | None, max_tokens: int
) -> list[Generation]:
    sampling = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    return list(
        await asyncio.gather(
            *(engine.generate(GenerationRequest(m, sampling, lora)) for m in items)
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
) -> Assessment:
    """Candidate adapter against the live one (or the base model) on validation questions:
    reward with the live context and with none, KL to the base, base-skill retention. The
    candidate is loaded into the engine for it and unloaded after."""
    try:
        await engine.load_adapter(candidate)
        s = plan.settings
        questions = plan.validation[: s.eval_questions]
        with_context = [plan.live_context.messages(q.conversation) for q in questions]
        bare = [q.conversation for q in questions]
        results: dict[str, float] = {}
        for name, lora in (("candidate", candidate), ("live", live)):
            answers = await _greedy(engine, with_context, lora, s.max_tokens)
            results[f"{name}_reward"] = await _mean_reward(scorer, questions, answers)
            plain = await _greedy(engine, bare, lora, s.max_tokens)
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
        for name, lora in (("candidate", candidate), ("base", None)):
            answers = await _greedy(engine, facts, lora, FACT_TOKENS)
            correct = [
                any(ok in a.text.lower() for ok in accepted)
                for a, (_, accepted) in zip(answers, FACTS, strict=True)
            ]
            results[f"{name}_fact_accuracy"] = sum(correct) / len(correct)
        results["candidate_perplexity"] = await asyncio.to_thread(
            policy.perplexity, TEXT, adapter=True
        )
        results["base_perplexity"] = await asyncio.to_thread(policy.perplexity, TEXT, adapter=False)
        return Assessment(**results)
    finally:
        await quietly_unload(engine, candidate.name)


def gate(metrics: Mapping[str, float], settings: SlowLoopSettings) -> Decision:
    """Promote the candidate? Reward over the live adapter's by the margin, within the KL
    budget, and without losing more base skills than the tolerance."""
    candidate, live = metrics["candidate_reward"], metrics["live_reward"]
    kl, drop = metrics["kl_to_base"], metrics["retention_drop"]
    return decide(
        candidate,
        live,
        margin=settings.margin,
        no_gain=f"reward {candidate:.3f} does not beat the live {live:.3f} "
        f"by the margin {settings.margin}",
        conditions=[
            # `not <=`: a NaN measurement fails its condition.
            Condition(
                not kl <= settings.kl_budget,
                f"KL to the base {kl:.3f} exceeds {settings.kl_budget}",
            ),
            Condition(
                not drop <= settings.retention_tolerance,
                f"base-skill accuracy dropped {drop:.3f} "
                f"(tolerance {settings.retention_tolerance})",
            ),
        ],
        promoted=f"reward {live:.3f} -> {candidate:.3f}",
    )
