from __future__ import annotations

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from backend.audit import service
from backend.audit.schemas import AuditEntryRead
from backend.http.deps import SessionDep
from backend.tenants.deps import AdminDep

router = APIRouter(prefix="/audit", tags=["audit"])

PAGE_BACK = "Page back: entries older than this (the last `at` seen); with a time zone."


@router.get("", response_model=list[AuditEntryRead])
def list_audit_entries(
    caller: AdminDep,
    session: SessionDep,
    limit: int = Query(50, ge=1, le=500),
    before: AwareDatetime | None = Query(None, description=PAGE_BACK),
) -> list[service.AuditEntry]:
    """The tenant's audit log, newest first: who changed what, when, and why."""
    return service.list_entries(session, tenant_id=caller.tenant_id, limit=limit, before=before)
