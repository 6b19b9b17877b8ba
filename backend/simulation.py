"""Simulated users for tests, benchmarks and the demo: they ask support questions and rate the
answers by a hidden preference the platform never sees (here: short answers).

The demo issue grows this into a full simulator (question sets, several preferences, noise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SUPPORT_QUESTIONS = [
    "Where is my order #10001?",
    "Can I return my shoes?",
    "Do you ship to Norway?",
    "How do I reset my password?",
    "My package arrived damaged, what now?",
    "Is there a discount for students?",
    "How long does a refund take?",
    "Can I pay with PayPal?",
    "Do you have gift cards?",
    "Why was my card declined?",
    "Can I change my delivery address?",
    "Where is my order #10002?",
]


@dataclass(frozen=True)
class WantsShortAnswers:
    """A user who wants at most `limit` words: thumbs down, a comment and a short correction
    for longer answers; thumbs up otherwise."""

    limit: int = 12

    def satisfied(self, answer: str) -> bool:
        return len(answer.split()) <= self.limit

    def feedback(self, completion_id: str, answer: str) -> dict[str, Any]:
        if self.satisfied(answer):
            return {"completion_id": completion_id, "score": 1}
        first_sentence = answer.split(".")[0].split()
        short = " ".join(first_sentence[: max(1, self.limit - 2)]).rstrip(",;:") + "."
        return {
            "completion_id": completion_id,
            "score": -1,
            "comment": "too long",
            "correction": short,
        }

    def reward(self) -> dict[str, Any]:
        """The agent's reward spec that states this preference as a check."""
        return {"checks": [{"type": "max_words", "limit": self.limit}], "correction_weight": 0}
