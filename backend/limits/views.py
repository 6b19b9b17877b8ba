from __future__ import annotations

from fastapi import APIRouter

from backend.http.deps import SessionDep, SettingsDep
from backend.limits import service
from backend.limits.schemas import LimitsRead
from backend.tenants.deps import MemberDep

router = APIRouter(prefix="/limits", tags=["limits"])


@router.get("", response_model=LimitsRead)
def get_limits(caller: MemberDep, session: SessionDep, settings: SettingsDep) -> LimitsRead:
    """The tenant's rate limit, token quota and job budget, and how much of each is used now."""
    usage = service.tenant_usage(
        session, tenant_id=caller.tenant_id, defaults=service.default_limits(settings)
    )
    return LimitsRead.model_validate(usage)
