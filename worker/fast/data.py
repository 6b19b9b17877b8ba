"""The fast loop's data: an agent's rated rollouts, as optimisation examples.

- One example per rated rollout: the conversation the user sent, the answer that was served,
  the mean user score, comments and the latest correction.
- Train/validation split by a hash of the rollout id: deterministic, and stable as data grows
  (a question never moves between the two sets, so validation scores stay comparable).
- Gold demonstrations come from the train split only: corrections first, then answers users
  rated highly. Validation questions never leak into a candidate's context.
"""

from __future__ import annotations

import hashlib
import statistics
import uuid
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.engines import ChatMessage
from backend.rollouts.models import Feedback, Rollout

HIGH_SCORE = 0.5


@dataclass(frozen=True)
class Example:
    rollout_id: str
    conversation: list[ChatMessage]
    logged_answer: str
    logged_prompt_version_id: uuid.UUID | None
    user_score: float  # mean rating in [-1, 1]
    comments: list[str] = field(default_factory=list)
    correction: str | None = None

    @property
    def question(self) -> str:
        """The user's last message: what a reward check reads as the question."""
        users = [m["content"] for m in self.conversation if m["role"] == "user"]
        return users[-1] if users else ""


@dataclass(frozen=True)
class Demonstration:
    question: str
    answer: str
    source: str  # "correction" | "rated"

    def turns(self) -> list[ChatMessage]:
        return [
            {"role": "user", "content": self.question},
            {"role": "assistant", "content": self.answer},
        ]


def in_validation(rollout_id: str, fraction: float) -> bool:
    digest = hashlib.sha256(rollout_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def load_examples(
    session: Session, *, tenant_id: uuid.UUID, agent_id: uuid.UUID, limit: int
) -> list[Example]:
    """The agent's most recent rated rollouts, oldest first (tenant-scoped)."""
    rated = (
        select(Feedback.rollout_id)
        .where(Feedback.tenant_id == tenant_id, Feedback.agent_id == agent_id)
        .group_by(Feedback.rollout_id)
    )
    rollouts = session.scalars(
        select(Rollout)
        .where(
            Rollout.tenant_id == tenant_id,
            Rollout.agent_id == agent_id,
            Rollout.id.in_(rated),
            Rollout.finish_reason.in_(("stop", "length")),
        )
        .order_by(Rollout.created_at.desc())
        .limit(limit)
    ).all()
    feedback: dict[str, list[Feedback]] = {}
    for item in session.scalars(
        select(Feedback)
        .where(Feedback.tenant_id == tenant_id, Feedback.rollout_id.in_([r.id for r in rollouts]))
        .order_by(Feedback.created_at)
    ):
        feedback.setdefault(item.rollout_id, []).append(item)
    examples = []
    for rollout in reversed(rollouts):
        ratings = feedback.get(rollout.id, [])
        corrections = [f.correction for f in ratings if f.correction and f.correction.strip()]
        examples.append(
            Example(
                rollout_id=rollout.id,
                conversation=[
                    {"role": m["role"], "content": m["content"]} for m in rollout.messages
                ],
                logged_answer=rollout.completion,
                logged_prompt_version_id=rollout.prompt_version_id,
                user_score=statistics.fmean(f.score for f in ratings),
                comments=[f.comment for f in ratings if f.comment and f.comment.strip()],
                correction=corrections[-1] if corrections else None,
            )
        )
    return examples


def split(examples: list[Example], fraction: float) -> tuple[list[Example], list[Example]]:
    train = [e for e in examples if not in_validation(e.rollout_id, fraction)]
    validation = [e for e in examples if in_validation(e.rollout_id, fraction)]
    # Tiny data: the hash may put everything on one side; keep both sides non-empty.
    if not validation and len(train) > 1:
        validation.append(train.pop())
    if not train and len(validation) > 1:
        train.append(validation.pop(0))
    return train, validation


def demonstration_pool(train: list[Example]) -> list[Demonstration]:
    """Gold exchanges from the train split, corrections first, each question once."""
    pool: list[Demonstration] = []
    seen: set[str] = set()
    for example in sorted(train, key=lambda e: (e.correction is None, -e.user_score)):
        question = example.question
        if not question or question in seen or len(example.conversation) != 1:
            continue
        if example.correction:
            pool.append(Demonstration(question, example.correction, "correction"))
        elif example.user_score >= HIGH_SCORE:
            pool.append(Demonstration(question, example.logged_answer, "rated"))
        else:
            continue
        seen.add(question)
    return pool
