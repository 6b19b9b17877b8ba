"""What a fast-loop run keeps: its population stored as prompt versions, the promotion decision
for its best member (worker/promotion.py), and the activation when that decision says so."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.agents.models import Agent
from backend.agents.schemas import FastLoopSettings
from backend.db import Database
from backend.prompts.context import decode_demonstrations
from backend.prompts.models import PromptSource, PromptVersion
from backend.prompts.service import activate_prompt_version, create_prompt_version
from worker.promotion import Condition, Decision, decide


@dataclass(frozen=True)
class Member:
    """A candidate context of the population, with its validation score."""

    instructions: str
    demonstrations: str
    score: float
    index: int  # GEPA's candidate index: 0 is the seed (the live version)


def save_population(
    session: Session,
    agent: Agent,
    seed_version: PromptVersion,
    members: list[Member],
    seed_score: float,
    job_id: uuid.UUID,
) -> list[dict[str, Any]]:
    """Each member as a prompt version (the seed is the live one), not activated; the agent's
    population is set to them. Returns the population, best first."""
    versions: list[PromptVersion] = []
    for member in members:
        if member.index == 0:
            versions.append(seed_version)
            continue
        versions.append(
            create_prompt_version(
                session,
                agent=agent,
                instructions=member.instructions,
                demonstrations=decode_demonstrations(member.demonstrations),
                source=PromptSource.OPTIMIZER,
                parent_id=seed_version.id,
                note=f"fast loop candidate (validation {member.score:.3f})",
                scores={"validation": member.score, "live_validation": seed_score},
                job_id=job_id,
                activate=False,
            )
        )
    population = [
        {"prompt_version_id": str(row.id), "version": row.version, "score": member.score}
        for member, row in zip(members, versions, strict=True)
    ]
    agent.population = population
    session.commit()
    return population


def gate(
    best: Member, seed_score: float, settings: FastLoopSettings, *, live_moved: bool
) -> Decision:
    """Promote the best member over the live version? `live_moved`: the live version is no
    longer the one the run started from."""
    score = best.score if best.index != 0 else seed_score  # the seed is no candidate
    return decide(
        score,
        seed_score,
        margin=settings.margin,
        no_gain="no candidate beat the live version",
        below_margin=f"best candidate gained {score - seed_score:.3f}, "
        f"below the margin {settings.margin}",
        conditions=[
            Condition(settings.pinned, "the prompt is pinned"),
            Condition(live_moved, "the live version changed during the run; not promoting over it"),
        ],
        promoted=f"validation {seed_score:.3f} -> {best.score:.3f}",
    )


def record(
    database: Database,
    agent_id: uuid.UUID,
    seed_version_id: uuid.UUID,
    job_id: uuid.UUID,
    members: list[Member],
    seed_score: float,
    settings: FastLoopSettings,
) -> dict[str, Any]:
    """Store the population, decide, and activate the best member if the decision says so.
    Returns the run's result."""
    with database.session() as session:
        agent = session.scalars(select(Agent).where(Agent.id == agent_id)).unique().one()
        seed_version = session.get(PromptVersion, seed_version_id)
        assert seed_version is not None
        population = save_population(session, agent, seed_version, members, seed_score, job_id)
        summary = {
            "seed_version": seed_version.version,
            "seed_score": seed_score,
            "best_score": members[0].score,
            "population": population,
        }
        session.refresh(agent)
        decision = gate(
            members[0],
            seed_score,
            settings,
            live_moved=agent.live_prompt_version_id != seed_version.id,
        )
        if not decision.promote:
            return {**summary, "outcome": "kept", "reason": decision.reason}
        winner: int = population[0]["version"]
        activate_prompt_version(
            session,
            agent=agent,
            version=winner,
            reason=f"fast loop: {decision.reason}",
            job_id=job_id,
        )
        return {
            **summary,
            "outcome": "promoted",
            "promoted_version": winner,
            "reason": f"promoted v{winner}: {decision.reason}",
        }
