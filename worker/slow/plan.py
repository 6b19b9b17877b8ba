"""A slow-loop run's plan: everything the run needs, read from the database once."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.adapters.models import AdapterVersion
from backend.agents.models import Agent
from backend.agents.schemas import FastLoopSettings, SlowLoopSettings
from backend.agents.service import agent_by_id, fast_loop_settings, slow_loop_settings
from backend.db import Database
from backend.errors import Invalid
from backend.jobs.models import Job
from backend.prompts.context import Context
from backend.prompts.models import PromptVersion
from backend.scoring.spec import RewardSpec
from worker.dataset import Example, Question, load_examples, load_questions, split


@dataclass(frozen=True)
class Plan:
    agent_id: uuid.UUID
    tenant_id: uuid.UUID
    slug: str
    settings: SlowLoopSettings
    spec: RewardSpec
    train: list[Question]
    validation: list[Question]
    contexts: list[Context]  # sampled from, mixed within a group (FST)
    live_context: Context  # what the assessment answers with
    live_adapter: AdapterVersion | None
    # For population refreshes (FST interleaving): the rated questions and how to search.
    examples: list[Example]
    fast_loop: FastLoopSettings
    max_tokens_cap: int


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
        live = Context.of(agent.live_prompt)
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
            _contexts(session, agent, settings, live),
            live,
            agent.live_adapter,
            examples,
            fast,
            agent.max_tokens_cap,
        )


def _contexts(
    session: Session, agent: Agent, settings: SlowLoopSettings, live: Context
) -> list[Context]:
    """What rollouts are sampled with: the fast loop's population, no context, or the live."""
    if settings.contexts == "population" and agent.population:
        ids = [uuid.UUID(m["prompt_version_id"]) for m in agent.population]
        rows = session.scalars(
            select(PromptVersion).where(
                PromptVersion.id.in_(ids), PromptVersion.tenant_id == agent.tenant_id
            )
        ).all()
        return [Context.of(row) for row in rows] or [live]
    if settings.contexts == "none":
        return [Context()]
    return [live]
