"""The slow loop's data: the agent's production questions (conversation prefixes of its
rollouts), de-duplicated and tenant-scoped, with the users' corrections where they gave one."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.engines import ChatMessage
from backend.rollouts.models import Feedback, Rollout


@dataclass(frozen=True)
class Question:
    conversation: list[ChatMessage]
    correction: str | None = None

    @property
    def key(self) -> str:
        return json.dumps(self.conversation, sort_keys=True)

    @property
    def text(self) -> str:
        users = [m["content"] for m in self.conversation if m["role"] == "user"]
        return users[-1] if users else ""


def load_questions(
    session: Session, *, tenant_id: uuid.UUID, agent_id: uuid.UUID, limit: int
) -> list[Question]:
    """Distinct conversations the agent was asked, most recent first."""
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
        conversation: list[ChatMessage] = [
            {"role": m["role"], "content": m["content"]} for m in messages
        ]
        question = Question(conversation, corrections.get(rollout_id))
        if not question.text.strip():
            continue
        known = seen.get(question.key)
        if known is None or (known.correction is None and question.correction):
            seen[question.key] = question
        if len(seen) >= limit:
            break
    return list(seen.values())


def in_validation(question: Question, fraction: float) -> bool:
    digest = hashlib.sha256(question.key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def split(questions: list[Question], fraction: float) -> tuple[list[Question], list[Question]]:
    train = [q for q in questions if not in_validation(q, fraction)]
    validation = [q for q in questions if in_validation(q, fraction)]
    if not validation and len(train) > 1:
        validation.append(train.pop())
    if not train and len(validation) > 1:
        train.append(validation.pop())
    return train, validation
