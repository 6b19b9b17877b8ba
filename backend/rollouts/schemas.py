from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class FeedbackCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    completion_id: str = Field(min_length=1, max_length=64, description="The chat completion id.")
    score: float = Field(ge=-1.0, le=1.0, description="Thumbs up = 1, thumbs down = -1.")
    comment: str | None = Field(None, max_length=8_000)
    correction: str | None = Field(None, max_length=32_000, description="The answer wanted.")


class FeedbackRead(BaseModel):
    model_config = ConfigDict(
        from_attributes=True, json_schema_serialization_defaults_required=True
    )
    id: uuid.UUID
    completion_id: str = Field(validation_alias="rollout_id")
    score: float
    comment: str | None
    correction: str | None
    created_at: datetime
    updated_at: datetime | None = Field(
        description="When this key last changed its rating (a key rates a completion once; "
        "rating it again updates the rating); null: never."
    )
    object: str = "feedback"


class RolloutRead(BaseModel):
    model_config = ConfigDict(
        from_attributes=True, json_schema_serialization_defaults_required=True
    )
    id: str
    agent: str
    prompt_version: int | None
    adapter_version: int | None
    messages: list[dict[str, Any]]
    completion: str
    sampling: dict[str, Any]
    prompt_tokens: int
    completion_tokens: int
    latency_ms: int
    finish_reason: str
    stream: bool
    created_at: datetime
    feedback: list[FeedbackRead] = Field(default_factory=list)
