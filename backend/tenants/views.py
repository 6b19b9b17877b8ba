from __future__ import annotations

import uuid

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from backend.audit import service as audit
from backend.audit.deps import ActorDep
from backend.audit.schemas import AuditEntryRead
from backend.audit.views import PAGE_BACK
from backend.http.deps import SessionDep, SettingsDep
from backend.limits import service as limits
from backend.limits.schemas import LimitsRead, LimitsWrite
from backend.tenants import service
from backend.tenants.deps import AdminDep, MemberDep, PlatformDep
from backend.tenants.models import ApiKey, Tenant
from backend.tenants.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyRead,
    Me,
    TenantCreate,
    TenantCreated,
    TenantRead,
)

tenants_router = APIRouter(prefix="/tenants", tags=["tenants"])
keys_router = APIRouter(prefix="/keys", tags=["keys"])
me_router = APIRouter(prefix="/me", tags=["keys"])


@me_router.get("", response_model=Me)
def get_me(caller: MemberDep, session: SessionDep) -> Me:
    """The calling key's tenant and role."""
    tenant, key = service.describe_caller(session, caller)
    return Me(
        tenant_id=tenant.id,
        tenant_name=tenant.name,
        role=key.role,
        key_id=key.id,
        key_name=key.name,
    )


@tenants_router.post("", status_code=201, response_model=TenantCreated)
def create_tenant(
    body: TenantCreate, _: PlatformDep, actor: ActorDep, session: SessionDep
) -> TenantCreated:
    """Create a tenant and its first admin key (platform key only)."""
    tenant, issued = service.create_tenant(session, name=body.name, actor=actor)
    return TenantCreated(tenant_id=tenant.id, name=tenant.name, admin_key=issued.plaintext)


@tenants_router.get("", response_model=list[TenantRead])
def list_tenants(_: PlatformDep, session: SessionDep) -> list[Tenant]:
    return service.list_tenants(session)


@tenants_router.get("/{tenant_id}/limits", response_model=LimitsRead)
def get_tenant_limits(
    tenant_id: uuid.UUID, _: PlatformDep, session: SessionDep, settings: SettingsDep
) -> LimitsRead:
    """The tenant's rate limit, token quota and job budget, and how much of each is used now."""
    service.get_tenant(session, tenant_id)
    usage = limits.tenant_usage(
        session, tenant_id=tenant_id, defaults=limits.default_limits(settings)
    )
    return LimitsRead.model_validate(usage)


@tenants_router.put("/{tenant_id}/limits", response_model=LimitsRead)
def set_tenant_limits(
    tenant_id: uuid.UUID,
    body: LimitsWrite,
    _: PlatformDep,
    actor: ActorDep,
    session: SessionDep,
    settings: SettingsDep,
) -> LimitsRead:
    """Set the tenant's own limits (null: the default; 0: none). Every API replica applies
    them from the next request on."""
    limits.set_limits(
        session,
        tenant_id=tenant_id,
        requests_per_minute=body.requests_per_minute,
        tokens_per_day=body.tokens_per_day,
        jobs_per_day=body.jobs_per_day,
        actor=actor,
    )
    usage = limits.tenant_usage(
        session, tenant_id=tenant_id, defaults=limits.default_limits(settings)
    )
    return LimitsRead.model_validate(usage)


@tenants_router.get("/{tenant_id}/audit", response_model=list[AuditEntryRead])
def list_tenant_audit_entries(
    tenant_id: uuid.UUID,
    _: PlatformDep,
    session: SessionDep,
    limit: int = Query(50, ge=1, le=500),
    before: AwareDatetime | None = Query(None, description=PAGE_BACK),
) -> list[audit.AuditEntry]:
    """A tenant's audit log, newest first (the platform's view of it)."""
    service.get_tenant(session, tenant_id)
    return audit.list_entries(session, tenant_id=tenant_id, limit=limit, before=before)


@keys_router.post("", status_code=201, response_model=ApiKeyCreated)
def create_api_key(
    body: ApiKeyCreate, caller: AdminDep, actor: ActorDep, session: SessionDep
) -> ApiKeyCreated:
    issued = service.create_api_key(
        session, tenant_id=caller.tenant_id, role=body.role, name=body.name, actor=actor
    )
    read = ApiKeyRead.model_validate(issued.api_key)
    return ApiKeyCreated(**read.model_dump(), key=issued.plaintext)


@keys_router.get("", response_model=list[ApiKeyRead])
def list_api_keys(caller: AdminDep, session: SessionDep) -> list[ApiKey]:
    return service.list_api_keys(session, tenant_id=caller.tenant_id)


@keys_router.delete("/{key_id}", response_model=ApiKeyRead)
def revoke_api_key(
    key_id: uuid.UUID, caller: AdminDep, actor: ActorDep, session: SessionDep
) -> ApiKey:
    """Revoke a key at once; requests with it are refused from now on."""
    return service.revoke_api_key(session, tenant_id=caller.tenant_id, key_id=key_id, actor=actor)
