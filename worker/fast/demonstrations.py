"""Gold demonstrations for the fast loop: exchanges from the train split that a candidate
context may show as user/assistant turns (corrections first, then answers users rated highly).
They come from the train split only, so validation questions never leak into a context
(the split: worker/dataset.py)."""

from __future__ import annotations

from dataclasses import dataclass

from backend.engines import ChatMessage
from worker.dataset import Example

HIGH_SCORE = 0.5


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
