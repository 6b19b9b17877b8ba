"""The audit writer of a request, bound to its caller: `audit(action, target, details)`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header
from sqlalchemy.orm import Session

from backend.audit.models import AuditEvent
from backend.audit.service import Actor, log_event
from backend.http.deps import SessionDep
from backend.tenants.deps import AdminDep, PrincipalDep
from backend.tenants.service import TenantCaller


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


@dataclass(frozen=True)
class AuditWriter:
    """Records a change a tenant admin made, once its service has committed it."""

    session: Session
    caller: TenantCaller
    actor: Actor

    def __call__(
        self, action: str, target: str, details: dict[str, Any] | None = None
    ) -> AuditEvent:
        return log_event(
            self.session,
            tenant_id=self.caller.tenant_id,
            actor=self.actor,
            action=action,
            target=target,
            details=details,
        )


def get_audit(caller: AdminDep, actor: ActorDep, session: SessionDep) -> AuditWriter:
    return AuditWriter(session, caller, actor)


AuditDep = Annotated[AuditWriter, Depends(get_audit)]
