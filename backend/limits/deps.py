"""The token quota as a dependency of the routes that generate."""

from __future__ import annotations

from backend.http.deps import DatabaseDep, SettingsDep
from backend.limits.service import check_token_quota, default_limits
from backend.tenants.deps import MemberDep


def within_token_quota(caller: MemberDep, settings: SettingsDep, database: DatabaseDep) -> None:
    """429 before generating anything once the tenant's token quota is used up."""
    with database.session() as session:
        check_token_quota(session, tenant_id=caller.tenant_id, defaults=default_limits(settings))
