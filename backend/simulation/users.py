"""Simulated users with hidden preferences: each preference is a rule the simulator checks and
the platform never sees. Users rate like people do: a score, often a short comment in plain
words, sometimes a correction; some skip rating and some are inconsistent. Seeded."""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from backend.simulation.questions import SimQuestion


class Preference(Protocol):
    @property
    def name(self) -> str: ...

    def satisfied(self, question: SimQuestion, answer: str) -> bool: ...

    def complaint(self, question: SimQuestion, answer: str) -> str: ...

    def corrected(self, question: SimQuestion, answer: str) -> str:
        """The answer the user wanted: this answer, changed to satisfy the preference."""
        ...

    def reward_check(self) -> dict[str, Any]:
        """The same rule as a reward-spec check, as a support lead would write it down."""
        ...


def _first_sentence(answer: str) -> str:
    parts = re.split(r"(?<=[.!?])\s", answer.strip(), maxsplit=1)
    return parts[0] if parts and parts[0] else answer.strip()


@dataclass(frozen=True)
class ShortAnswers:
    limit: int = 12
    name: str = "short"

    def satisfied(self, question: SimQuestion, answer: str) -> bool:
        return 0 < len(answer.split()) <= self.limit

    def complaint(self, question: SimQuestion, answer: str) -> str:
        return "too long" if answer.strip() else "you did not answer"

    def corrected(self, question: SimQuestion, answer: str) -> str:
        words = _first_sentence(answer).split()[: max(3, self.limit - 2)]
        return " ".join(words).rstrip(",;:") + "."

    def reward_check(self) -> dict[str, Any]:
        return {"type": "max_words", "limit": self.limit}


@dataclass(frozen=True)
class StartsWith:
    word: str = "Sure"
    name: str = "starts-with"

    def satisfied(self, question: SimQuestion, answer: str) -> bool:
        return answer.lstrip().lower().startswith(self.word.lower())

    def complaint(self, question: SimQuestion, answer: str) -> str:
        return f"please start with '{self.word}'"

    def corrected(self, question: SimQuestion, answer: str) -> str:
        return f"{self.word}: {_first_sentence(answer)}"

    def reward_check(self) -> dict[str, Any]:
        return {"type": "starts_with", "text": self.word}


@dataclass(frozen=True)
class MentionsOrder:
    name: str = "mentions-order"

    def satisfied(self, question: SimQuestion, answer: str) -> bool:
        order = question.entities.get("order")
        return order is None or order in answer

    def complaint(self, question: SimQuestion, answer: str) -> str:
        return "you did not mention my order"

    def corrected(self, question: SimQuestion, answer: str) -> str:
        return f"About order {question.entities.get('order', '')}: {_first_sentence(answer)}"

    def reward_check(self) -> dict[str, Any]:
        return {"type": "repeats_entity", "pattern": r"#\d{5}"}


@dataclass(frozen=True)
class JsonAnswer:
    name: str = "json"

    def satisfied(self, question: SimQuestion, answer: str) -> bool:
        try:
            document = json.loads(answer)
        except ValueError:
            return False
        return isinstance(document, dict) and isinstance(document.get("answer"), str)

    def complaint(self, question: SimQuestion, answer: str) -> str:
        return 'I need JSON like {"answer": "..."}'

    def corrected(self, question: SimQuestion, answer: str) -> str:
        return json.dumps({"answer": _first_sentence(answer)})

    def reward_check(self) -> dict[str, Any]:
        return {
            "type": "json_schema",
            "json_schema": {
                "type": "object",
                "required": ["answer"],
                "properties": {"answer": {"type": "string"}},
            },
        }


PREFERENCES: dict[str, Preference] = {
    p.name: p for p in (ShortAnswers(), StartsWith(), MentionsOrder(), JsonAnswer())
}


@dataclass
class UserModel:
    """How a population of users behaves (all probabilities in [0, 1])."""

    preference: Preference
    rate: float = 0.9  # rates an answer at all
    comment: float = 0.7  # adds a comment to a bad rating
    correct: float = 0.5  # adds a correction to a bad rating
    inconsistent: float = 0.05  # rates the opposite of what they think
    seed: int = 0
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def feedback(
        self, question: SimQuestion, completion_id: str, answer: str
    ) -> dict[str, Any] | None:
        """A `/v1/feedback` body, or None when the user does not rate."""
        if self.rng.random() >= self.rate:
            return None
        happy = self.preference.satisfied(question, answer)
        if self.rng.random() < self.inconsistent:
            happy = not happy
        if happy:
            return {"completion_id": completion_id, "score": 1}
        body: dict[str, Any] = {"completion_id": completion_id, "score": -1}
        if self.rng.random() < self.comment:
            body["comment"] = self.preference.complaint(question, answer)
        if self.rng.random() < self.correct:
            body["correction"] = self.preference.corrected(question, answer)
        return body
