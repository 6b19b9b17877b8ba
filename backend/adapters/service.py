"""Adapter versions of an agent: registration from a filled directory, listing, the pointer."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from backend.adapters.models import AdapterSource, AdapterStatus, AdapterVersion
from backend.adapters.storage import AdapterStore
from backend.agents.models import Agent
from backend.agents.service import record_activation
from backend.agents.versions import add_next_version, get_version, list_versions
from backend.db import new_id
from backend.engines.lora import AdapterValidator
from backend.errors import Unavailable

_CONFIG_KEYS = ("r", "lora_alpha", "lora_dropout", "target_modules", "bias", "use_rslora")


def register_adapter(
    session: Session,
    store: AdapterStore,
    *,
    agent: Agent,
    staging: Path,
    source: AdapterSource,
    validator: AdapterValidator,
    note: str = "",
    metrics: dict[str, Any] | None = None,
    parent_id: uuid.UUID | None = None,
    job_id: uuid.UUID | None = None,
    created_by: uuid.UUID | None = None,
) -> AdapterVersion:
    """Validate a staged adapter directory (its config is replaced by the rebuilt one), store
    it and record it as the next version.

    The version is not live; activation is a separate step. On any failure the staged files
    are removed and nothing is recorded.
    """
    try:
        config = validator.sanitize(staging)
    except Exception:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    version_id = new_id()
    try:
        location = store.commit(
            staging, tenant_id=agent.tenant_id, agent_id=agent.id, version_id=version_id
        )
    except Exception as exc:  # the store's errors vary by backend (OSError, botocore, ...)
        shutil.rmtree(staging, ignore_errors=True)
        raise Unavailable(f"the adapter store is unavailable: {exc}") from exc

    def make(number: int) -> AdapterVersion:
        return AdapterVersion(
            id=version_id,
            tenant_id=agent.tenant_id,
            agent_id=agent.id,
            version=number,
            path=location,
            base_model=agent.base_model,
            source=source,
            config={k: config[k] for k in _CONFIG_KEYS if k in config},
            metrics=metrics or {},
            parent_id=parent_id,
            job_id=job_id,
            note=note,
            created_by=created_by,
        )

    try:
        return add_next_version(session, AdapterVersion, agent=agent, make=make)
    except Exception:
        store.discard(location)
        raise


def list_adapter_versions(session: Session, *, agent: Agent) -> list[AdapterVersion]:
    return list_versions(session, AdapterVersion, agent=agent)


def get_adapter_version(session: Session, *, agent: Agent, version: int) -> AdapterVersion:
    return get_version(session, AdapterVersion, agent=agent, version=version)


def mark_adapter_failed(session: Session, *, row: AdapterVersion, reason: str) -> None:
    row.status = AdapterStatus.FAILED
    row.status_reason = reason[:4000]
    session.commit()


def set_live_adapter(
    session: Session,
    *,
    agent: Agent,
    row: AdapterVersion | None,
    reason: str = "",
    actor_key_id: uuid.UUID | None = None,
    job_id: uuid.UUID | None = None,
) -> None:
    """Point the agent at `row` (None: serve the base model), with its audit row, atomically."""
    if row is not None and row.status != AdapterStatus.READY:
        row.status = AdapterStatus.READY
        row.status_reason = ""
    record_activation(
        session,
        agent=agent,
        kind="adapter",
        from_version=agent.live_adapter_version,
        to_version=row.version if row is not None else None,
        reason=reason,
        actor_key_id=actor_key_id,
        job_id=job_id,
    )
    agent.live_adapter_version_id = row.id if row is not None else None
    session.commit()
