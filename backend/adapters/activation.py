"""The swap protocol for activating adapter version N of an agent:

1. load it in the engine under its own name (never in place under a live name: vLLM can reuse
   prefix-cache blocks of the previous adapter),
2. probe it with one real request,
3. move the agent's live pointer in one transaction (with its audit row),
4. let requests still using the old name finish, then unload the old name.

A failed load or probe leaves the old version serving and marks the new one failed with the
reason. Rollback is the same protocol pointing at an older version. Other processes see the new
pointer on their next request (they read it per request); an engine that does not know the
name yet (another replica, or a restarted engine) loads it on first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import overload

from starlette.concurrency import run_in_threadpool

from backend.adapters import service
from backend.adapters.in_flight import InFlight
from backend.adapters.models import AdapterVersion
from backend.adapters.storage import AdapterStore
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

logger = logging.getLogger(__name__)

PROBE = GenerationRequest(
    messages=[{"role": "user", "content": "Hello"}],
    sampling=SamplingParams(max_tokens=1, temperature=0.0),
)
DRAIN_TIMEOUT_S = 600.0
_unloads: set[asyncio.Task[None]] = set()  # keeps background unloads alive until done


@overload
def adapter_ref(row: AdapterVersion, store: AdapterStore) -> AdapterRef: ...
@overload
def adapter_ref(row: None, store: AdapterStore) -> None: ...
@overload
def adapter_ref(row: AdapterVersion | None, store: AdapterStore) -> AdapterRef | None: ...


def adapter_ref(row: AdapterVersion | None, store: AdapterStore) -> AdapterRef | None:
    """The engine's view of a version: its unique name and a local directory with its files
    (materialised from the adapter store on first use; blocking I/O). None for no adapter
    (the base model serves)."""
    if row is None:
        return None
    return AdapterRef(name=row.engine_name, path=str(store.local_dir(row.path)))


async def activate_adapter(
    database: Database,
    engine: Engine,
    store: AdapterStore,
    *,
    tenant_id: uuid.UUID,
    slug: str,
    version: int | None,
    reason: str,
    actor_key_id: uuid.UUID | None,
    in_flight: InFlight | None = None,
    unload_grace_s: float | None = 30.0,
    retry_after_s: int = 5,
) -> AdapterVersion | None:
    """Make adapter `version` live for the agent (`None`: serve the base model).

    `unload_grace_s=None` leaves the old adapter to the engine's own eviction (a caller with no
    event loop that outlives the call, like a worker task, cannot wait to unload it)."""

    def load() -> tuple[AdapterVersion | None, AdapterRef | None, AdapterRef | None]:
        with database.session() as session:
            agent = get_agent(session, tenant_id=tenant_id, slug=slug)
            live = agent.live_adapter
            old = AdapterRef(live.engine_name, live.path) if live else None
            if version is None:
                return None, None, old
            row = service.get_adapter_version(session, agent=agent, version=version)
            return row, adapter_ref(row, store), old

    row, ref, old = await run_in_threadpool(load)
    if row is not None and ref is not None:
        await _load_and_probe(database, engine, row, ref, retry_after_s)

    def flip() -> AdapterVersion | None:
        with database.session() as session:
            agent = get_agent(session, tenant_id=tenant_id, slug=slug)
            fresh = session.get(AdapterVersion, row.id) if row is not None else None
            service.set_live_adapter(
                session, agent=agent, row=fresh, reason=reason, actor_key_id=actor_key_id
            )
            return fresh

    activated = await run_in_threadpool(flip)
    swapped_out = old is not None and (row is None or old.name != row.engine_name)
    if swapped_out and old is not None and unload_grace_s is not None:
        task = asyncio.create_task(_unload_when_drained(engine, old, in_flight, unload_grace_s))
        _unloads.add(task)
        task.add_done_callback(_unloads.discard)
    return activated


async def _load_and_probe(
    database: Database, engine: Engine, row: AdapterVersion, ref: AdapterRef, retry_after_s: int
) -> None:
    try:
        await engine.load_adapter(ref)
        await engine.generate(GenerationRequest(PROBE.messages, PROBE.sampling, adapter=ref))
    except EngineUnavailable as exc:
        raise Unavailable(str(exc), retry_after_s=retry_after_s) from exc
    except EngineError as exc:
        reason = str(exc)

        def fail() -> None:
            with database.session() as session:
                failed = session.get(AdapterVersion, row.id)
                if failed is not None:
                    service.mark_adapter_failed(session, row=failed, reason=reason)

        await run_in_threadpool(fail)
        with contextlib.suppress(EngineError):
            await engine.unload_adapter(ref.name)
        raise Invalid(
            f"adapter version {row.version} cannot be served: {reason}", param="version"
        ) from exc


async def _unload_when_drained(
    engine: Engine, old: AdapterRef, in_flight: InFlight | None, grace_s: float
) -> None:
    if in_flight is not None:
        await in_flight.drained(old.name, timeout_s=DRAIN_TIMEOUT_S)
    await asyncio.sleep(grace_s)
    if in_flight is not None and in_flight.count(old.name):
        return  # rolled back to it meanwhile: it is serving again
    try:
        await engine.unload_adapter(old.name)
        logger.info("unloaded swapped-out adapter %s", old.name)
    except EngineError as exc:  # the engine may be restarting; it will not reload it by itself
        logger.warning("could not unload swapped-out adapter %s: %s", old.name, exc)
