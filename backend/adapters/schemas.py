from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from backend.adapters.models import AdapterSource, AdapterStatus
from backend.db import MAX_INT


class AdapterVersionRead(BaseModel):
    model_config = ConfigDict(
        from_attributes=True, json_schema_serialization_defaults_required=True
    )
    id: uuid.UUID
    version: int
    base_model: str
    source: AdapterSource
    status: AdapterStatus
    status_reason: str
    metrics: dict[str, Any]
    config: dict[str, Any]
    parent_id: uuid.UUID | None
    job_id: uuid.UUID | None
    note: str
    created_at: datetime
    live: bool = False


class AdapterActivation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int | None = Field(
        ge=1, le=MAX_INT, description="The version to serve; null serves the base model."
    )
    reason: str = Field("", max_length=2000)
