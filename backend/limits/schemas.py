from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from backend.db import MAX_INT

# Inside the columns: requests_per_minute and jobs_per_day are Integers, tokens_per_day a
# BigInteger.
MAX_REQUESTS_PER_MINUTE = MAX_INT
MAX_TOKENS_PER_DAY = 10**15
MAX_JOBS_PER_DAY = MAX_INT


class LimitsWrite(BaseModel):
    """A tenant's own limits. null: the deployment's default applies; 0: no limit."""

    model_config = ConfigDict(extra="forbid")
    requests_per_minute: int | None = Field(None, ge=0, le=MAX_REQUESTS_PER_MINUTE)
    tokens_per_day: int | None = Field(
        None, ge=0, le=MAX_TOKENS_PER_DAY, description="Prompt and completion tokens together."
    )
    jobs_per_day: int | None = Field(
        None,
        ge=0,
        le=MAX_JOBS_PER_DAY,
        description="Evaluation, optimisation and training jobs started per day (UTC).",
    )


class UsageRead(BaseModel):
    model_config = ConfigDict(
        from_attributes=True, json_schema_serialization_defaults_required=True
    )
    limit: int = Field(description="In force now; 0: no limit.")
    used: int = Field(
        description="Used in the current window (requests are counted only while a limit applies)."
    )
    window_s: int
    resets_at: datetime = Field(description="When the current window ends.")
    overridden: bool = Field(description="The tenant has its own value (else the default).")


class LimitsRead(BaseModel):
    model_config = ConfigDict(
        from_attributes=True, json_schema_serialization_defaults_required=True
    )
    tenant_id: uuid.UUID
    requests_per_minute: UsageRead
    tokens_per_day: UsageRead
    jobs_per_day: UsageRead
