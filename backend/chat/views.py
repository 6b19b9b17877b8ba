"""OpenAI-compatible endpoints: `/v1/chat/completions` and `/v1/models`."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from backend.adapters.storage import adapter_store
from backend.agents.service import list_agents
from backend.chat.schemas import ChatCompletionRequest, ModelCard, ModelList
from backend.chat.service import conversation_of, resolve_serving, version_headers
from backend.db import is_unavailable
from backend.engines import EngineError, EngineUnavailable, Generation
from backend.errors import EngineFailure, Unavailable
from backend.http.deps import DatabaseDep, SessionDep, SettingsDep
from backend.limits.deps import within_token_quota
from backend.runtime.agent import AgentRuntime, ServingContext
from backend.tenants.deps import MemberDep

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["openai"])


@router.get("/models", response_model=ModelList)
def list_models(caller: MemberDep, session: SessionDep) -> ModelList:
    """The tenant's agents, as OpenAI models (`model` = agent slug)."""
    agents = list_agents(session, tenant_id=caller.tenant_id)
    return ModelList(
        data=[
            ModelCard(id=a.slug, created=int(a.created_at.timestamp()), owned_by="fastslow")
            for a in agents
        ]
    )


def _runtime(request: Request) -> AgentRuntime:
    runtime: AgentRuntime = request.app.state.runtime
    return runtime


def _engine_error(exc: EngineError, retry_after_s: int) -> Exception:
    if isinstance(exc, EngineUnavailable):
        return Unavailable(f"the model engine is unavailable: {exc}", retry_after_s=retry_after_s)
    return EngineFailure(f"the model engine failed: {exc}")


@router.post("/chat/completions", response_model=None, dependencies=[Depends(within_token_quota)])
async def create_chat_completion(
    body: ChatCompletionRequest,
    caller: MemberDep,
    database: DatabaseDep,
    settings: SettingsDep,
    request: Request,
) -> JSONResponse | StreamingResponse:
    """Chat with an agent; the answer is stored as a rollout before the response ends."""
    messages = conversation_of(body, settings)

    def resolve() -> ServingContext:
        with database.session() as session:
            return resolve_serving(
                session,
                caller=caller,
                request=body,
                store=adapter_store(settings),
                messages=messages,
                settings=settings,
            )

    serving = await run_in_threadpool(resolve)
    runtime = _runtime(request)
    headers = version_headers(serving)
    created = int(time.time())

    if not body.stream:
        try:
            generation = await runtime.run(serving, messages)
        except EngineError as exc:
            raise _engine_error(exc, settings.engine_retry_after_s) from exc
        return JSONResponse(_completion(serving, generation, created), headers=headers)

    events = runtime.stream(serving, messages)
    try:
        # Wait for the first piece so that an engine outage is still a proper 503, not a
        # broken stream.
        first = await anext(events)
    except EngineError as exc:
        raise _engine_error(exc, settings.engine_retry_after_s) from exc
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return StreamingResponse(
        _sse(serving, first, events, created, include_usage),
        media_type="text/event-stream",
        headers={**headers, "Cache-Control": "no-cache"},
    )


def _envelope(
    serving: ServingContext, created: int, *, chunk: bool, choices: list[dict[str, Any]]
) -> dict[str, Any]:
    """The OpenAI response object around `choices`: a completion, or a chunk of a stream."""
    fingerprint = f"fastslow-p{serving.prompt_version or 0}-a{serving.adapter_version or 0}"
    return {
        "id": serving.completion_id,
        "object": "chat.completion.chunk" if chunk else "chat.completion",
        "created": created,
        "model": serving.agent_slug,
        "system_fingerprint": fingerprint,
        "choices": choices,
    }


def _completion(serving: ServingContext, generation: Generation, created: int) -> dict[str, Any]:
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": generation.text},
        "finish_reason": generation.finish_reason,
        "logprobs": None,
    }
    return {
        **_envelope(serving, created, chunk=False, choices=[choice]),
        "usage": _usage(generation),
    }


def _usage(generation: Generation) -> dict[str, int]:
    return {
        "prompt_tokens": generation.prompt_tokens,
        "completion_tokens": generation.completion_tokens,
        "total_tokens": generation.prompt_tokens + generation.completion_tokens,
    }


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def _chunk(
    serving: ServingContext, created: int, delta: dict[str, Any], finish: str | None = None
) -> str:
    choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
    return _event(_envelope(serving, created, chunk=True, choices=[choice]))


async def _sse(
    serving: ServingContext,
    first: str | Generation,
    events: AsyncGenerator[str | Generation, None],
    created: int,
    include_usage: bool,
) -> AsyncIterator[str]:
    """The stream's events. The runtime records the rollout however the stream ends; closing
    `events` (client gone) stops the engine."""
    try:
        yield _chunk(serving, created, {"role": "assistant", "content": ""})
        item = first
        while not isinstance(item, Generation):
            yield _chunk(serving, created, {"content": item})
            item = await anext(events)
        yield _chunk(serving, created, {}, item.finish_reason)
        if include_usage:
            usage = _envelope(serving, created, chunk=True, choices=[])
            yield _event({**usage, "usage": _usage(item)})
        yield "data: [DONE]\n\n"
    except EngineError as exc:
        # Headers are gone already: report in-band (the runtime kept what was produced).
        logger.warning("engine failed mid-stream for %s: %s", serving.completion_id, exc)
        yield _event(
            {"error": {"message": f"the model engine failed: {exc}", "type": "engine_error"}}
        )
        yield "data: [DONE]\n\n"
    except SQLAlchemyError as exc:
        if not is_unavailable(exc):
            raise
        # The answer was produced but could not be stored (the recorder retried first): say
        # so in-band, so the client knows this answer has no rollout to rate.
        logger.error("rollout %s not stored, database unavailable: %s", serving.completion_id, exc)
        error = {
            "message": "the answer could not be stored: the database is unavailable",
            "type": "server_error",
            "code": "unavailable",
        }
        yield _event({"error": error})
    finally:
        with anyio.CancelScope(shield=True):
            await events.aclose()
