"""What both learning loops learn from, and the one train/validation split they share.

- `load_examples`: an agent's rated rollouts (the fast loop optimises on them; the slow loop
  re-fits its population on them): the conversation, the answer served, the mean user score,
  comments and the latest correction. Oldest first.
- `load_questions`: the distinct conversations the agent was asked (rated or not), with the
  users' corrections where they gave one (the slow loop samples answers to them). Newest first.

The split, one rule for both loops:
- A question's place is a hash of its conversation (sha256 of the JSON, read as a number in
  [0, 1)); below `fraction` it is a validation question. Deterministic, and stable as data
  grows: a question never moves between the two sets, and the same question asked twice is
  on one side only, so validation scores stay comparable and a validation question never
  reaches a candidate's context as a demonstration (demonstrations come from train only).
- Tiny data, where the hash puts everything on one side: the question whose place is nearest
  the boundary crosses (with every example of it; only one example if it is the only
  question), so both sides are non-empty whenever there are two items.
- Each side keeps the order it was given in.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.engines import ChatMessage
from backend.prompts.context import turns_of
from backend.rollouts.models import Feedback, Rollout


def conversation_key(conversation: Sequence[ChatMessage]) -> str:
    return json.dumps(list(conversation), sort_keys=True)


def last_user_message(conversation: Sequence[ChatMessage]) -> str:
    """What a reward check reads as the question."""
    users = [m["content"] for m in conversation if m["role"] == "user"]
    return users[-1] if users else ""


@dataclass(frozen=True)
class Example:
    """One rated rollout."""

    rollout_id: str
    conversation: list[ChatMessage]
    logged_answer: str
    logged_prompt_version_id: uuid.UUID | None
    user_score: float  # mean rating in [-1, 1]
    comments: list[str] = field(default_factory=list)
    correction: str | None = None

    @property
    def question(self) -> str:
        return last_user_message(self.conversation)


@dataclass(frozen=True)
class Question:
    """One distinct conversation the agent was asked."""

    conversation: list[ChatMessage]
    correction: str | None = None

    @property
    def key(self) -> str:
        return conversation_key(self.conversation)

    @property
    def text(self) -> str:
        return last_user_message(self.conversation)


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
                conversation=turns_of(rollout.messages),
                logged_answer=rollout.completion,
                logged_prompt_version_id=rollout.prompt_version_id,
                user_score=statistics.fmean(f.score for f in ratings),
                comments=[f.comment for f in ratings if f.comment and f.comment.strip()],
                correction=corrections[-1] if corrections else None,
            )
        )
    return examples


def load_questions(
    session: Session, *, tenant_id: uuid.UUID, agent_id: uuid.UUID, limit: int
) -> list[Question]:
    """Distinct conversations the agent was asked, most recent first (tenant-scoped)."""
    rows = session.execute(
        select(Rollout.id, Rollout.messages)
        .where(Rollout.tenant_id == tenant_id, Rollout.agent_id == agent_id)
        .order_by(Rollout.created_at.desc())
        .limit(limit * 5)
    ).all()
    corrections: dict[str, str | None] = {}
    for rollout_id, correction in session.execute(
        select(Feedback.rollout_id, Feedback.correction)
        .where(
            Feedback.tenant_id == tenant_id,
            Feedback.agent_id == agent_id,
            Feedback.correction.is_not(None),
        )
        .order_by(Feedback.created_at)
    ):
        corrections[rollout_id] = correction
    seen: dict[str, Question] = {}
    for rollout_id, messages in rows:
        question = Question(turns_of(messages), corrections.get(rollout_id))
        if not question.text.strip():
            continue
        known = seen.get(question.key)
        if known is None or (known.correction is None and question.correction):
            seen[question.key] = question
        if len(seen) >= limit:
            break
    return list(seen.values())


class Asked(Protocol):
    """Anything the split places: an example or a question."""

    @property
    def conversation(self) -> list[ChatMessage]: ...


Item = TypeVar("Item", bound=Asked)


def place(item: Asked) -> float:
    """Where the split puts a question: a number in [0, 1) fixed by its conversation."""
    digest = hashlib.sha256(conversation_key(item.conversation).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def in_validation(item: Asked, fraction: float) -> bool:
    return place(item) < fraction


def split(items: Sequence[Item], fraction: float) -> tuple[list[Item], list[Item]]:
    """(train, validation), by the rule in this module's docstring."""
    places = [place(item) for item in items]
    validation = [p < fraction for p in places]
    if len(items) > 1 and len(set(validation)) == 1:
        # Tiny data: everything on one side; the question nearest the boundary crosses.
        nearest = min(range(len(items)), key=lambda i: (abs(places[i] - fraction), i))
        same = [i for i, p in enumerate(places) if p == places[nearest]]
        for i in same if len(same) < len(items) else [nearest]:
            validation[i] = not validation[i]
    train = [item for item, v in zip(items, validation, strict=True) if not v]
    return train, [item for item, v in zip(items, validation, strict=True) if v]
