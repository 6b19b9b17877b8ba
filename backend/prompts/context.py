"""What a prompt version puts in front of a conversation: the agent's instructions as the system
message and its demonstrations as real user/assistant turns (a small model follows examples given
as turns far better than examples pasted into the system text).

One value, `Context`, used wherever a prompt meets a conversation: serving a chat turn, both
learning loops and evaluation. GEPA's candidates carry demonstrations as JSON text
(`encode_demonstrations` / `Context.from_candidate`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from backend.engines import ChatMessage
from backend.prompts.models import PromptVersion


def turns_of(demonstrations: Sequence[Mapping[str, Any]]) -> list[ChatMessage]:
    """Stored or proposed demonstration turns as chat messages (role and content only)."""
    return [{"role": t["role"], "content": t["content"]} for t in demonstrations]


def encode_demonstrations(turns: Sequence[Mapping[str, Any]]) -> str:
    return json.dumps(turns_of(turns))


def decode_demonstrations(text: str) -> list[ChatMessage]:
    return turns_of(json.loads(text) if text.strip() else [])


@dataclass(frozen=True)
class Context:
    """Instructions and demonstration turns; `prompt_version` when it is a stored version."""

    instructions: str = ""
    demonstrations: list[ChatMessage] = field(default_factory=list)
    prompt_version: int | None = None

    @classmethod
    def of(cls, version: PromptVersion | None) -> Context:
        """The context a stored prompt version makes (none: no instructions, no turns)."""
        if version is None:
            return cls()
        return cls(version.instructions, turns_of(version.demonstrations), version.version)

    @classmethod
    def from_candidate(cls, instructions: str, demonstrations: str) -> Context:
        """A GEPA candidate: instructions and demonstrations as JSON text."""
        return cls(instructions, decode_demonstrations(demonstrations))

    def messages(self, conversation: Sequence[ChatMessage]) -> list[ChatMessage]:
        """System text + demonstration turns + the conversation.

        A client's own system message is kept, appended to the agent's instructions, so that
        templates that allow one system message (most) still get exactly one, first.
        """
        turns = list(conversation)
        system = self.instructions
        if turns and turns[0]["role"] == "system":
            client_system = turns.pop(0)["content"]
            system = f"{system}\n\n{client_system}" if system else client_system
        head: list[ChatMessage] = [{"role": "system", "content": system}] if system else []
        return [*head, *self.demonstrations, *turns]
