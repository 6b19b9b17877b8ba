"""Tenants and their API keys: creation, authentication, revocation.

A key looks like `fsk_<lookup>_<secret>`. The lookup part finds the row; only a salted SHA-256
of the secret is stored (the secret is 256 random bits, so a slow hash adds nothing but latency
to every request), and the whole key is shown once, at creation.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.audit.service import Actor, add_event
from backend.db import utcnow
from backend.errors import Conflict, NotFound
from backend.tenants.models import ApiKey, Role, Tenant

KEY_PREFIX = "fsk"
# Writing last_used_at on every request would turn each read into a write; a minute is plenty.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class IssuedKey:
    """A freshly created key: the row, and the plaintext that is never shown again."""

    api_key: ApiKey
    plaintext: str


@dataclass(frozen=True)
class TenantCaller:
    """A request made with a tenant's key; every query it makes is scoped to `tenant_id`."""

    tenant_id: uuid.UUID
    key_id: uuid.UUID
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN


@dataclass(frozen=True)
class PlatformCaller:
    """A request made with the platform key: it manages tenants and sees no tenant's data."""


Principal = TenantCaller | PlatformCaller

# Who acts when no key does: the platform's operator (the CLI, tests, the platform key).
PLATFORM_ACTOR = Actor(key_id=None)


def _hash(salt: str, secret: str) -> str:
    return hashlib.sha256(f"{salt}:{secret}".encode()).hexdigest()


def create_tenant(
    session: Session, *, name: str, actor: Actor = PLATFORM_ACTOR
) -> tuple[Tenant, IssuedKey]:
    """Create a tenant and its first admin key (audited in the same transaction)."""
    if session.scalar(select(Tenant.id).where(Tenant.name == name)) is not None:
        raise Conflict(f"a tenant named {name!r} already exists", param="name")
    tenant = Tenant(name=name)
    session.add(tenant)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"a tenant named {name!r} already exists", param="name") from None
    issued = _new_key(session, tenant_id=tenant.id, role=Role.ADMIN, name="initial admin key")
    add_event(
        session,
        tenant_id=tenant.id,
        actor=actor,
        action="tenant.create",
        target=f"tenant:{tenant.id}",
        details={"name": name, "admin_key_id": str(issued.api_key.id)},
    )
    session.commit()
    return tenant, issued


def get_tenant(session: Session, tenant_id: uuid.UUID) -> Tenant:
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound(f"tenant {tenant_id} not found")
    return tenant


def list_tenants(session: Session) -> list[Tenant]:
    return list(session.scalars(select(Tenant).order_by(Tenant.created_at)))


def create_api_key(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    role: Role,
    name: str,
    actor: Actor = PLATFORM_ACTOR,
) -> IssuedKey:
    if session.get(Tenant, tenant_id) is None:
        raise NotFound(f"tenant {tenant_id} not found")
    issued = _new_key(session, tenant_id=tenant_id, role=role, name=name)
    add_event(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="key.create",
        target=f"key:{issued.api_key.id}",
        details={"role": role.value, "name": name},
    )
    session.commit()
    return issued


def _new_key(session: Session, *, tenant_id: uuid.UUID, role: Role, name: str) -> IssuedKey:
    lookup = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    row = ApiKey(
        tenant_id=tenant_id,
        lookup=lookup,
        salt=salt,
        secret_hash=_hash(salt, secret),
        name=name,
        role=role,
    )
    session.add(row)
    session.flush()
    return IssuedKey(row, f"{KEY_PREFIX}_{lookup}_{secret}")


def list_api_keys(session: Session, *, tenant_id: uuid.UUID) -> list[ApiKey]:
    query = select(ApiKey).where(ApiKey.tenant_id == tenant_id).order_by(ApiKey.created_at)
    return list(session.scalars(query))


def revoke_api_key(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    key_id: uuid.UUID,
    actor: Actor = PLATFORM_ACTOR,
) -> ApiKey:
    """Revoke a key at once. The tenant's last active admin key cannot be revoked: nobody could
    manage the tenant any more (create an admin key first, then revoke the old one)."""
    # Lock the tenant row first: two admins revoking each other's key at the same time must
    # not both see the other key as still active (PostgreSQL; SQLite serialises writers).
    session.scalar(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())
    row = session.scalar(select(ApiKey).where(ApiKey.id == key_id, ApiKey.tenant_id == tenant_id))
    if row is None:
        raise NotFound(f"API key {key_id} not found")
    if row.revoked_at is None:
        if row.role == Role.ADMIN and _other_active_admins(session, tenant_id, key_id) == 0:
            session.rollback()
            raise Conflict(
                "this is the tenant's last active admin key; create another admin key before "
                "revoking it"
            )
        row.revoked_at = utcnow()
        add_event(
            session, tenant_id=tenant_id, actor=actor, action="key.revoke", target=f"key:{key_id}"
        )
        session.commit()
    return row


def _other_active_admins(session: Session, tenant_id: uuid.UUID, key_id: uuid.UUID) -> int:
    return len(
        session.scalars(
            select(ApiKey.id).where(
                ApiKey.tenant_id == tenant_id,
                ApiKey.role == Role.ADMIN,
                ApiKey.revoked_at.is_(None),
                ApiKey.id != key_id,
            )
        ).all()
    )


def describe_caller(session: Session, caller: TenantCaller) -> tuple[Tenant, ApiKey]:
    tenant = session.get(Tenant, caller.tenant_id)
    key = session.get(ApiKey, caller.key_id)
    if tenant is None or key is None:
        raise NotFound("the key's tenant is gone")
    return tenant, key


def authenticate(session: Session, plaintext: str) -> TenantCaller | None:
    """The principal of a tenant key, or None if it is malformed, unknown or revoked."""
    parts = plaintext.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX:
        return None
    _, lookup, secret = parts
    row = session.scalar(select(ApiKey).where(ApiKey.lookup == lookup))
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.secret_hash, _hash(row.salt, secret)):
        return None
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        row.last_used_at = now
        session.commit()
    return TenantCaller(tenant_id=row.tenant_id, key_id=row.id, role=row.role)
