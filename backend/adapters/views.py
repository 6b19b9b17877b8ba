from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi import Path as PathParam

from backend.adapters import service
from backend.adapters.activation import activate_adapter
from backend.adapters.models import AdapterSource, AdapterVersion
from backend.adapters.schemas import AdapterActivation, AdapterVersionRead
from backend.adapters.storage import adapter_store, adapter_validator
from backend.agents.deps import AgentDep
from backend.audit.deps import ActorDep, AuditDep
from backend.db import MAX_INT
from backend.engines.lora import CONFIG_FILE, WEIGHTS_FILE
from backend.errors import PayloadTooLarge
from backend.http.deps import DatabaseDep, EngineDep, SessionDep, SettingsDep
from backend.tenants.deps import AdminDep

router = APIRouter(prefix="/agents/{slug}/adapters", tags=["adapters"])


def _read(row: AdapterVersion, live_id: object) -> AdapterVersionRead:
    return AdapterVersionRead.model_validate(row).model_copy(update={"live": row.id == live_id})


def _save(upload: UploadFile, target: Path, limit: int) -> int:
    written = 0
    with target.open("wb") as out:
        while chunk := upload.file.read(1 << 20):
            written += len(chunk)
            if written > limit:
                raise PayloadTooLarge(f"adapter files larger than {limit} bytes")
            out.write(chunk)
    return written


@router.post("", status_code=201, response_model=AdapterVersionRead)
def upload_adapter(
    caller: AdminDep,
    agent: AgentDep,
    audit: AuditDep,
    session: SessionDep,
    settings: SettingsDep,
    config: Annotated[UploadFile, File(description=f"The peft {CONFIG_FILE}.")],
    weights: Annotated[UploadFile, File(description=f"The peft {WEIGHTS_FILE}.")],
    note: Annotated[str, Form(max_length=2000)] = "",
) -> AdapterVersionRead:
    """Register a LoRA adapter trained elsewhere as the agent's next version (not live yet)."""
    store = adapter_store(settings)
    staging = store.staging_dir()
    try:
        used = _save(config, staging / CONFIG_FILE, settings.max_adapter_bytes)
        _save(weights, staging / WEIGHTS_FILE, settings.max_adapter_bytes - used)
    except Exception:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    row = service.register_adapter(
        session,
        store,
        agent=agent,
        staging=staging,
        source=AdapterSource.UPLOAD,
        validator=adapter_validator(settings),
        note=note,
        created_by=caller.key_id,
    )
    audit("adapter.upload", f"agent:{agent.slug}", {"version": row.version})
    return _read(row, agent.live_adapter_version_id)


@router.get("", response_model=list[AdapterVersionRead])
def list_adapter_versions(
    caller: AdminDep, agent: AgentDep, session: SessionDep
) -> list[AdapterVersionRead]:
    rows = service.list_adapter_versions(session, agent=agent)
    return [_read(row, agent.live_adapter_version_id) for row in rows]


@router.get("/{version}", response_model=AdapterVersionRead)
def get_adapter_version(
    version: Annotated[int, PathParam(ge=1, le=MAX_INT)],
    caller: AdminDep,
    agent: AgentDep,
    session: SessionDep,
) -> AdapterVersionRead:
    row = service.get_adapter_version(session, agent=agent, version=version)
    return _read(row, agent.live_adapter_version_id)


@router.post("/activate", response_model=AdapterVersionRead | None)
async def activate_adapter_version(
    slug: str,
    body: AdapterActivation,
    caller: AdminDep,
    actor: ActorDep,
    database: DatabaseDep,
    engine: EngineDep,
    settings: SettingsDep,
    request: Request,
) -> AdapterVersionRead | None:
    """Serve adapter `version` (or the base model for null): loaded and probed first; a
    version that fails stays out of service and is marked failed with the reason. The move is
    audited as an Activation row; `reason` defaults to `X-Fastslow-Reason`."""
    row = await activate_adapter(
        database,
        engine,
        adapter_store(settings),
        tenant_id=caller.tenant_id,
        slug=slug,
        version=body.version,
        reason=body.reason or actor.reason,
        actor_key_id=caller.key_id,
        in_flight=request.app.state.runtime.in_flight,
        unload_grace_s=settings.adapter_unload_grace_s,
        retry_after_s=settings.engine_retry_after_s,
    )
    if row is None:
        return None
    return _read(row, row.id)
