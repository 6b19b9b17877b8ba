from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from backend.prompts.models import PromptSource

MAX_INSTRUCTIONS_CHARS = 32_000
MAX_DEMONSTRATION_TURNS = 32


class Turn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["user", "assistant"]
    content: str = Field(min_length=1, max_length=8_000)


def check_demonstrations(turns: list[Turn]) -> list[Turn]:
    """Demonstrations are whole exchanges: user, assistant, user, assistant, ..."""
    if len(turns) % 2:
        raise ValueError("demonstrations must be user/assistant pairs (an even number of turns)")
    for i, turn in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if turn.role != expected:
            raise ValueError(f"demonstration turn {i} must have role {expected!r}")
    return turns


class PromptVersionCreate(BaseModel):
    """A manual edit: a new immutable version, live at once unless `activate` is false."""

    model_config = ConfigDict(extra="forbid")
    instructions: str = Field(max_length=MAX_INSTRUCTIONS_CHARS)
    demonstrations: list[Turn] = Field(default_factory=list, max_length=MAX_DEMONSTRATION_TURNS)
    note: str = Field("", max_length=2000)
    activate: bool = True

    _pairs = field_validator("demonstrations")(check_demonstrations)


class ActivationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field("", max_length=2000)


class PromptVersionRead(BaseModel):
    model_config = ConfigDict(
        from_attributes=True, json_schema_serialization_defaults_required=True
    )
    id: uuid.UUID
    version: int
    instructions: str
    demonstrations: list[dict[str, Any]]
    parent_id: uuid.UUID | None
    source: PromptSource
    scores: dict[str, Any]
    note: str
    job_id: uuid.UUID | None
    created_at: datetime
    live: bool = False


class PromptDiffRead(BaseModel):
    a: PromptVersionRead
    b: PromptVersionRead
    instructions_diff: list[str] = Field(description="Unified diff lines of the instructions.")
    demonstrations_diff: list[str] = Field(description="Unified diff of the turns.")
