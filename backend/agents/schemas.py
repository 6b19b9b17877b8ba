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


class AgentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    slug: str = Field(pattern=SLUG_PATTERN, description="Lowercase name; the chat `model`.")
    system_prompt: str = Field(max_length=MAX_INSTRUCTIONS_CHARS)
    demonstrations: list[Turn] = Field(default_factory=list, max_length=MAX_DEMONSTRATION_TURNS)
    base_model: str | None = Field(None, description="Defaults to the deployment's base model.")
    reward: RewardSpec | None = None
    max_tokens_cap: int | None = Field(None, gt=0, le=MAX_TOKENS_LIMIT)
    description: str = Field("", max_length=500)

    _pairs = field_validator("demonstrations")(check_demonstrations)


class AgentUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str | None = Field(None, max_length=500)
    reward: RewardSpec | None = None
    max_tokens_cap: int | None = Field(None, gt=0, le=MAX_TOKENS_LIMIT)


class AgentRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    slug: str
    description: str
    base_model: str
    reward: dict[str, Any]
    max_tokens_cap: int
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
