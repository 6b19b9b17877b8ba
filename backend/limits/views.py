from __future__ import annotations

from fastapi import APIRouter

from backend.api.deps import MemberDep, SessionDep, SettingsDep, default_limits
from backend.limits import service
from backend.limits.schemas import LimitsRead

router = APIRouter(prefix="/api/v1/limits", tags=["limits"])


@router.get("", response_model=LimitsRead)
def get_limits(caller: MemberDep, session: SessionDep, settings: SettingsDep) -> LimitsRead:
    """The tenant's rate limit, token quota and job budget, and how much of each is used now."""
    usage = service.tenant_usage(
        session, tenant_id=caller.tenant_id, defaults=default_limits(settings)
    )
    return LimitsRead.model_validate(usage)
