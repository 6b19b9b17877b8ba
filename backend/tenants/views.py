from __future__ import annotations

import uuid

from fastapi import APIRouter

from backend.api.deps import AdminDep, MemberDep, PlatformDep, SessionDep
from backend.tenants import service
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

tenants_router = APIRouter(prefix="/api/v1/tenants", tags=["tenants"])
keys_router = APIRouter(prefix="/api/v1/keys", tags=["keys"])
me_router = APIRouter(prefix="/api/v1/me", tags=["keys"])


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
def create_tenant(body: TenantCreate, _: PlatformDep, session: SessionDep) -> TenantCreated:
    """Create a tenant and its first admin key (platform key only)."""
    tenant, issued = service.create_tenant(session, name=body.name)
    return TenantCreated(tenant_id=tenant.id, name=tenant.name, admin_key=issued.plaintext)


@tenants_router.get("", response_model=list[TenantRead])
def list_tenants(_: PlatformDep, session: SessionDep) -> list[Tenant]:
    return service.list_tenants(session)


@keys_router.post("", status_code=201, response_model=ApiKeyCreated)
def create_api_key(body: ApiKeyCreate, caller: AdminDep, session: SessionDep) -> ApiKeyCreated:
    issued = service.create_api_key(
        session, tenant_id=caller.tenant_id, role=body.role, name=body.name
    )
    read = ApiKeyRead.model_validate(issued.api_key)
    return ApiKeyCreated(**read.model_dump(), key=issued.plaintext)


@keys_router.get("", response_model=list[ApiKeyRead])
def list_api_keys(caller: AdminDep, session: SessionDep) -> list[ApiKey]:
    return service.list_api_keys(session, tenant_id=caller.tenant_id)


@keys_router.delete("/{key_id}", response_model=ApiKeyRead)
def revoke_api_key(key_id: uuid.UUID, caller: AdminDep, session: SessionDep) -> ApiKey:
    """Revoke a key at once; requests with it are refused from now on."""
    return service.revoke_api_key(session, tenant_id=caller.tenant_id, key_id=key_id)
