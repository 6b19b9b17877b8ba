"""Simulated tenants: questions generated from templates and users with hidden preferences.
The demo (`fastslow demo`), the benchmarks and the tests all use this one simulator."""

from __future__ import annotations

from typing import Any

from backend.simulation.questions import SimQuestion, question_set, split
from backend.simulation.users import PREFERENCES, Preference, ShortAnswers, UserModel

# A small fixed set for quick tests and benchmarks (the demo generates hundreds).
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


def strict_user(preference: Preference) -> UserModel:
    """A user who rates every answer consistently, always with a comment and a correction."""
    return UserModel(preference, rate=1.0, comment=1.0, correct=1.0, inconsistent=0.0)


def reward_spec(preference: Preference) -> dict[str, Any]:
    """The agent's reward spec stating the preference (correction similarity off)."""
    return {"checks": [preference.reward_check()], "correction_weight": 0}


__all__ = [
    "PREFERENCES",
    "SUPPORT_QUESTIONS",
    "Preference",
    "ShortAnswers",
    "SimQuestion",
    "UserModel",
    "question_set",
    "reward_spec",
    "split",
    "strict_user",
]
