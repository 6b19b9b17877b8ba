from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from backend.jobs.models import JobStatus


class JobRead(BaseModel):
    model_config = ConfigDict(
        from_attributes=True, json_schema_serialization_defaults_required=True
    )
    id: uuid.UUID
    agent_id: uuid.UUID | None
    kind: str
    status: JobStatus
    cancel_requested: bool
    attempts: int
    params: dict[str, Any]
    step: int
    total: int
    metrics: dict[str, Any]
    result: dict[str, Any]
    error: str
    log_tail: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None


class EvaluationCreate(BaseModel):
    """Answer questions with the agent's live prompt and adapter and score them."""

    model_config = ConfigDict(extra="forbid")
    prompts: list[str] | None = Field(
        None,
        max_length=200,
        description="Questions to ask; default: the agent's recent distinct questions.",
    )
    limit: int = Field(20, ge=1, le=200, description="Most recent questions to use.")
    max_tokens: int = Field(128, ge=1, le=4096)
