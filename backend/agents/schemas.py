from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from backend.prompts.schemas import (
    MAX_DEMONSTRATION_TURNS,
    MAX_INSTRUCTIONS_CHARS,
    Turn,
    check_demonstrations,
)
from backend.scoring.spec import RewardSpec

# The slug is the `model` of OpenAI requests: keep it URL- and log-safe.
SLUG_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
MAX_TOKENS_LIMIT = 32_768


class FastLoopSettings(BaseModel):
    """How the fast loop (prompt optimisation from feedback) treats this agent."""

    model_config = ConfigDict(extra="forbid")
    pinned: bool = Field(False, description="No automatic prompt changes while pinned.")
    min_new_feedback: int = Field(
        10, ge=1, le=100_000, description="Run after this many new ratings (N)..."
    )
    max_wait_minutes: float = Field(
        15.0, gt=0, le=10_080, description="...or this long after the first new rating (M)."
    )
    budget: int = Field(48, ge=4, le=10_000, description="Answers generated per run.")
    margin: float = Field(
        0.02, ge=0, le=1, description="Validation gain over the live version needed to go live."
    )
    max_tokens: int = Field(96, ge=1, le=4096, description="Answer length while optimising.")
    validation_fraction: float = Field(0.4, gt=0, lt=1)
    min_examples: int = Field(4, ge=2, le=10_000, description="Fewer rated questions: no run.")
    max_examples: int = Field(200, ge=2, le=10_000, description="Most recent rated questions used.")
    demonstrations: int = Field(2, ge=0, le=8, description="Example exchanges in a candidate.")
    population_size: int = Field(4, ge=1, le=16, description="Candidates kept for the slow loop.")


class AgentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    slug: str = Field(pattern=SLUG_PATTERN, description="Lowercase name; the chat `model`.")
    system_prompt: str = Field(max_length=MAX_INSTRUCTIONS_CHARS)
    demonstrations: list[Turn] = Field(default_factory=list, max_length=MAX_DEMONSTRATION_TURNS)
    base_model: str | None = Field(None, description="Defaults to the deployment's base model.")
    reward: RewardSpec | None = None
    max_tokens_cap: int | None = Field(None, gt=0, le=MAX_TOKENS_LIMIT)
    description: str = Field("", max_length=500)
    fast_loop: FastLoopSettings | None = None

    _pairs = field_validator("demonstrations")(check_demonstrations)


class AgentUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str | None = Field(None, max_length=500)
    reward: RewardSpec | None = None
    max_tokens_cap: int | None = Field(None, gt=0, le=MAX_TOKENS_LIMIT)
    fast_loop: FastLoopSettings | None = Field(
        None, description="Only the fields sent change; the others keep their values."
    )


class AgentRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    slug: str
    description: str
    base_model: str
    reward: dict[str, Any]
    max_tokens_cap: int
    fast_loop: FastLoopSettings
    population: list[dict[str, Any]]
    live_prompt_version: int | None
    live_adapter_version: int | None
    created_at: datetime
    updated_at: datetime


class ActivationRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    kind: str
    from_version: int | None
    to_version: int | None
    reason: str
    actor_key_id: uuid.UUID | None
    job_id: uuid.UUID | None
    created_at: datetime
