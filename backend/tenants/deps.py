"""Who calls: the API key of a request as a FastAPI dependency (a tenant member, a tenant admin,
or the platform), each tenant call counted against the tenant's request rate."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from backend.config import Settings
from backend.db import Database
from backend.errors import DomainError, Forbidden, Unauthorized
from backend.http.deps import DatabaseDep, SettingsDep
from backend.limits.service import count_request, default_limits
from backend.tenants.service import PlatformCaller, Principal, TenantCaller, authenticate

MISSING_KEY = "missing API key: send `Authorization: Bearer <key>`"
INVALID_KEY = "invalid or revoked API key"
NOT_A_TENANT_KEY = "the platform key manages tenants; use a tenant's key here"
NOT_AN_ADMIN_KEY = "this needs an admin key of the tenant"

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer fsk_...`")


def get_principal(
    settings: SettingsDep,
    database: DatabaseDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or not credentials.credentials:
        raise Unauthorized(MISSING_KEY)
    principal = principal_for_key(settings, database, credentials.credentials)
    if principal is None:
        raise Unauthorized(INVALID_KEY)
    return principal


def principal_for_key(settings: Settings, database: Database, key: str) -> Principal | None:
    """Who `key` is (the platform or a tenant's key), or None if it is no valid key. Also used
    before a route runs (the upload body limit), so both agree on who a caller is."""
    platform = settings.platform_key.get_secret_value() if settings.platform_key else ""
    if platform and hmac.compare_digest(key.encode(), platform.encode()):
        return PlatformCaller()
    # A short session of its own: the request's work may outlive it (streaming).
    with database.session() as session:
        return authenticate(session, key)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require_tenant(
    principal: PrincipalDep, settings: SettingsDep, database: DatabaseDep
) -> TenantCaller:
    """A tenant's key, counted against the tenant's request rate limit (429 over it)."""
    if not isinstance(principal, TenantCaller):
        raise Forbidden(NOT_A_TENANT_KEY)
    with database.session() as session:
        count_request(session, tenant_id=principal.tenant_id, defaults=default_limits(settings))
    return principal


def require_admin(caller: Annotated[TenantCaller, Depends(require_tenant)]) -> TenantCaller:
    if not caller.is_admin:
        raise Forbidden(NOT_AN_ADMIN_KEY)
    return caller


def require_platform(principal: PrincipalDep) -> PlatformCaller:
    if not isinstance(principal, PlatformCaller):
        raise Forbidden("this needs the platform key")
    return principal


MemberDep = Annotated[TenantCaller, Depends(require_tenant)]
AdminDep = Annotated[TenantCaller, Depends(require_admin)]
PlatformDep = Annotated[PlatformCaller, Depends(require_platform)]


def upload_refusal(settings: Settings, database: Database, key: str | None) -> DomainError | None:
    """Why a bearer `key` may not upload an adapter (the same answers as the dependencies:
    no valid key 401, a member's or the platform's key 403), or None for a tenant's admin.
    The body size limit asks this before it reads an upload's body."""
    if not key:
        return Unauthorized(MISSING_KEY)
    principal = principal_for_key(settings, database, key)
    if principal is None:
        return Unauthorized(INVALID_KEY)
    if not isinstance(principal, TenantCaller):
        return Forbidden(NOT_A_TENANT_KEY)
    if not principal.is_admin:
        return Forbidden(NOT_AN_ADMIN_KEY)
    return None
