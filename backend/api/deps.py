"""FastAPI dependencies, gathered in one place: settings, database, engine, the caller."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from backend.audit.service import Actor
from backend.config import Settings
from backend.db import Database
from backend.engines import Engine
from backend.errors import Forbidden, Unauthorized
from backend.limits.service import Limits, check_token_quota, count_request
from backend.limits.service import default_limits as limits_defaults
from backend.tenants.service import PlatformCaller, Principal, TenantCaller, authenticate


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]
EngineDep = Annotated[Engine, Depends(get_engine)]


def get_session(database: DatabaseDep) -> Iterator[Session]:
    with database.session() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]

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


def default_limits(settings: Settings) -> Limits:
    return limits_defaults(settings)


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


def within_token_quota(caller: MemberDep, settings: SettingsDep, database: DatabaseDep) -> None:
    """429 before generating anything once the tenant's token quota is used up."""
    with database.session() as session:
        check_token_quota(session, tenant_id=caller.tenant_id, defaults=default_limits(settings))


def get_actor(
    principal: PrincipalDep,
    reason: Annotated[
        str,
        Header(
            alias="X-Fastslow-Reason",
            max_length=2000,
            description="Why the change is made; kept in the audit log.",
        ),
    ] = "",
) -> Actor:
    """Who makes an audited change, and why."""
    key_id = principal.key_id if isinstance(principal, TenantCaller) else None
    return Actor(key_id=key_id, reason=reason)


ActorDep = Annotated[Actor, Depends(get_actor)]
