"""A step's rollouts: the current policy published to the engine, G answers sampled per question,
each with a context drawn from the population (mixed within a group: that is FST), and each
answer scored by the agent's reward spec."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

from backend.agents.schemas import SlowLoopSettings
from backend.engines import (
    AdapterRef,
    ChatMessage,
    Engine,
    EngineError,
    Generation,
    GenerationRequest,
    SamplingParams,
)
from backend.prompts.context import Context
from backend.scoring.scorer import Scorer
from worker.dataset import Question
from worker.slow.policy import Policy, Sequence

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rollout:
    """One sampled answer: the prompt as the engine saw it, the answer, and its reward."""

    messages: list[ChatMessage]
    generation: Generation
    reward: float = 0.0  # set by `score_groups`

    @property
    def sequence(self) -> Sequence:
        """What the policy trains on."""
        return Sequence(
            self.messages, self.generation.text, self.generation.finish_reason == "stop"
        )


@dataclass(frozen=True)
class Group:
    """The G answers to one question."""

    question: Question
    rollouts: list[Rollout]

    @property
    def rewards(self) -> list[float]:
        return [r.reward for r in self.rollouts]


async def publish(engine: Engine, policy: Policy, directory: Path, name: str) -> AdapterRef:
    """The policy as it is now, loaded into the engine under `name` (written to `directory`,
    which a vLLM server on another host must be able to read)."""
    await asyncio.to_thread(policy.save_adapter, directory)
    ref = AdapterRef(name, str(directory))
    await engine.load_adapter(ref)
    return ref


async def quietly_unload(engine: Engine, name: str) -> None:
    try:
        await engine.unload_adapter(name)
    except EngineError as exc:
        logger.warning("could not unload %s: %s", name, exc)


async def retire(engine: Engine, ref: AdapterRef) -> None:
    """A published step's adapter: unloaded, and its files removed."""
    await quietly_unload(engine, ref.name)
    shutil.rmtree(ref.path, ignore_errors=True)


async def sample_groups(
    engine: Engine,
    train: list[Question],
    contexts: list[Context],
    settings: SlowLoopSettings,
    rng: random.Random,
    lora: AdapterRef,
) -> list[Group]:
    """`questions_per_step` questions, G answers each (not scored yet)."""
    questions = rng.sample(train, min(settings.questions_per_step, len(train)))
    sampling = SamplingParams(
        max_tokens=settings.max_tokens, temperature=settings.temperature, seed=rng.randrange(2**31)
    )
    prompts = [
        [rng.choice(contexts).messages(q.conversation) for _ in range(settings.group_size)]
        for q in questions
    ]

    async def answer(messages: list[ChatMessage]) -> Rollout:
        generation = await engine.generate(GenerationRequest(messages, sampling, lora))
        return Rollout(messages, generation)

    answered = await asyncio.gather(*(answer(m) for group in prompts for m in group))
    size = settings.group_size
    return [Group(q, list(answered[i * size : (i + 1) * size])) for i, q in enumerate(questions)]


async def score_groups(scorer: Scorer, groups: list[Group]) -> list[Group]:
    """Each answer rewarded (no score counts as 0), one after the other."""
    scored = []
    for group in groups:
        rollouts = []
        for rollout in group.rollouts:
            result = await scorer.score(
                question=group.question.text,
                answer=rollout.generation.text,
                correction=group.question.correction,
            )
            rollouts.append(dataclasses.replace(rollout, reward=result.value or 0.0))
        scored.append(Group(group.question, rollouts))
    return scored
