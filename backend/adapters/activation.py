"""Activating an adapter version: load it in the engine, probe it with a real request, and only
then move the agent's live pointer. A failed load or probe leaves the old version serving and
marks the new one failed with the reason."""

from __future__ import annotations

import uuid

from starlette.concurrency import run_in_threadpool

from backend.adapters import service
from backend.adapters.models import AdapterVersion
from backend.agents.service import get_agent
from backend.db import Database
from backend.engines import (
    AdapterRef,
    Engine,
    EngineError,
    EngineUnavailable,
    GenerationRequest,
    SamplingParams,
)
from backend.errors import Invalid, Unavailable

PROBE = GenerationRequest(
    messages=[{"role": "user", "content": "Hello"}],
    sampling=SamplingParams(max_tokens=1, temperature=0.0),
)


def adapter_ref(row: AdapterVersion) -> AdapterRef:
    return AdapterRef(name=row.engine_name, path=row.path)


async def activate_adapter(
    database: Database,
    engine: Engine,
    *,
    tenant_id: uuid.UUID,
    slug: str,
    version: int | None,
    reason: str,
    actor_key_id: uuid.UUID | None,
    retry_after_s: int = 5,
) -> AdapterVersion | None:
    """Make adapter `version` live for the agent (`None`: serve the base model)."""

    def load() -> AdapterVersion | None:
        with database.session() as session:
            agent = get_agent(session, tenant_id=tenant_id, slug=slug)
            if version is None:
                return None
            return service.get_adapter_version(session, agent=agent, version=version)

    row = await run_in_threadpool(load)
    if row is not None:
        ref = adapter_ref(row)
        try:
            await engine.load_adapter(ref)
            await engine.generate(GenerationRequest(PROBE.messages, PROBE.sampling, adapter=ref))
        except EngineUnavailable as exc:
            raise Unavailable(str(exc), retry_after_s=retry_after_s) from exc
        except EngineError as exc:
            reason_failed = str(exc)

            def fail() -> None:
                with database.session() as session:
                    failed = session.get(AdapterVersion, row.id)
                    if failed is not None:
                        service.mark_adapter_failed(session, row=failed, reason=reason_failed)

            await run_in_threadpool(fail)
            raise Invalid(
                f"adapter version {row.version} cannot be served: {reason_failed}",
                param="version",
            ) from exc

    def flip() -> AdapterVersion | None:
        with database.session() as session:
            agent = get_agent(session, tenant_id=tenant_id, slug=slug)
            fresh = session.get(AdapterVersion, row.id) if row is not None else None
            service.set_live_adapter(
                session, agent=agent, row=fresh, reason=reason, actor_key_id=actor_key_id
            )
            return fresh

    return await run_in_threadpool(flip)
