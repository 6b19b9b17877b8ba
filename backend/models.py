"""Every table, imported in one place so Alembic and `create_all` see the whole schema."""

from backend.adapters.models import AdapterSource, AdapterStatus, AdapterVersion
from backend.agents.models import Activation, Agent
from backend.audit.models import AuditEvent
from backend.db import Base
from backend.jobs.models import Job, JobKind, JobStatus
from backend.limits.models import TenantLimits, UsageCounter
from backend.prompts.models import PromptSource, PromptVersion
from backend.rollouts.models import Feedback, Rollout
from backend.schedules.models import Schedule
from backend.tenants.models import ApiKey, Role, Tenant

__all__ = [
    "Activation",
    "AdapterSource",
    "AdapterStatus",
    "AdapterVersion",
    "Agent",
    "ApiKey",
    "AuditEvent",
    "Base",
    "Feedback",
    "Job",
    "JobKind",
    "JobStatus",
    "PromptSource",
    "PromptVersion",
    "Role",
    "Rollout",
    "Schedule",
    "Tenant",
    "TenantLimits",
    "UsageCounter",
]
