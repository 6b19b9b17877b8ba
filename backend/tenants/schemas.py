from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from backend.tenants.models import Role

TENANT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}$"


class TenantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=TENANT_NAME_PATTERN)


class TenantCreated(BaseModel):
    tenant_id: uuid.UUID
    name: str
    admin_key: str = Field(description="Shown once; store it now.")


class TenantRead(BaseModel):
    model_config = ConfigDict(
        from_attributes=True, json_schema_serialization_defaults_required=True
    )
    id: uuid.UUID
    name: str
    created_at: datetime


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role = Role.MEMBER
    name: str = Field("", max_length=100)


class ApiKeyRead(BaseModel):
    model_config = ConfigDict(
        from_attributes=True, json_schema_serialization_defaults_required=True
    )
    id: uuid.UUID
    name: str
    role: Role
    lookup: str = Field(description="The public part of the key (`fsk_<lookup>_...`).")
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class Me(BaseModel):
    """Who the key belongs to: what the UI shows and which pages it offers."""

    tenant_id: uuid.UUID
    tenant_name: str
    role: Role
    key_id: uuid.UUID
    key_name: str


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(description="Shown once; store it now.")
