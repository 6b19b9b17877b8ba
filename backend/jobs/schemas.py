from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from backend.jobs.contract import EvaluateOptions
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


class EvaluationCreate(EvaluateOptions):
    """Answer questions with the agent's live prompt and adapter and score them."""
