from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from backend.audit.service import ActorKind


class AuditEntryRead(BaseModel):
    model_config = ConfigDict(
        from_attributes=True, json_schema_serialization_defaults_required=True
    )
    id: uuid.UUID
    at: datetime
    actor: ActorKind = Field(
        description="`key`: a tenant's key (`actor_key_id`); `platform`: the platform key; "
        "`job`: a learning-loop job (`job_id`); `system`: fastslow itself."
    )
    actor_key_id: uuid.UUID | None
    job_id: uuid.UUID | None
    action: str = Field(description="e.g. `key.revoke`, `prompt.activate`, `job.start`.")
    target: str = Field(description="e.g. `key:<id>`, `agent:<slug>`, `job:<id>`.")
    reason: str
    details: dict[str, Any]
