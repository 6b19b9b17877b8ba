"""The serving path without HTTP: resolve what serves a request, and record what it produced."""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from backend.adapters.activation import adapter_ref
from backend.adapters.storage import AdapterStore
from backend.agents.service import get_agent
from backend.chat.context import count_prompt_tokens, fit_max_tokens
from backend.chat.schemas import ChatCompletionRequest
from backend.config import Settings
from backend.db import Database, is_unavailable
from backend.engines import ChatMessage, SamplingParams
from backend.errors import Invalid
from backend.prompts.context import Context
from backend.rollouts.models import Rollout
from backend.rollouts.service import record_rollout
from backend.runtime.agent import Outcome, Recorder, ServingContext
from backend.tenants.service import TenantCaller

logger = logging.getLogger(__name__)


def conversation_of(request: ChatCompletionRequest, settings: Settings) -> list[ChatMessage]:
    if len(request.messages) > settings.max_messages:
        raise Invalid(
            f"too many messages: {len(request.messages)} (at most {settings.max_messages})",
            param="messages",
        )
    conversation: list[ChatMessage] = []
    for i, message in enumerate(request.messages):
        text = message.text()
        if "\x00" in text:
            # Refused before generating: the rollout could not be stored (PostgreSQL).
            raise Invalid(f"message {i} contains a NUL character", param=f"messages[{i}].content")
        if len(text) > settings.max_message_chars:
            raise Invalid(
                f"message {i} has {len(text)} characters (at most {settings.max_message_chars})",
                param=f"messages[{i}].content",
            )
        conversation.append({"role": message.engine_role, "content": text})
    if not conversation[-1]["content"].strip():
        raise Invalid("the last user message is empty", param="messages")
    return conversation


def resolve_serving(
    session: Session,
    *,
    caller: TenantCaller,
    request: ChatCompletionRequest,
    store: AdapterStore,
    messages: list[ChatMessage],
    settings: Settings,
) -> ServingContext:
    """Read the agent's live versions now (no cache, so an activation is seen at once), and
    check that the prompt they make with `messages` fits the context caps (ContextTooLong
    otherwise: nothing is sent to the engine)."""
    agent = get_agent(session, tenant_id=caller.tenant_id, slug=request.model)
    requested = request.requested_max_tokens
    if requested is not None and requested > agent.max_tokens_cap:
        raise Invalid(
            f"max_tokens {requested} exceeds agent {agent.slug!r}'s cap of {agent.max_tokens_cap}",
            param="max_tokens",
        )
    prompt = agent.live_prompt
    adapter = agent.live_adapter
    context = Context.of(prompt)
    prompt_tokens = count_prompt_tokens(settings.base_model_path, context.messages(messages))
    max_tokens = fit_max_tokens(
        agent_slug=agent.slug,
        prompt_tokens=prompt_tokens,
        requested_max_tokens=requested,
        max_tokens_cap=agent.max_tokens_cap,
        max_prompt_tokens=agent.max_prompt_tokens,
        max_context_tokens=settings.max_context_tokens,
    )
    return ServingContext(
        tenant_id=agent.tenant_id,
        agent_id=agent.id,
        agent_slug=agent.slug,
        api_key_id=caller.key_id,
        prompt_version_id=prompt.id if prompt else None,
        context=context,
        adapter_version_id=adapter.id if adapter else None,
        adapter_version=adapter.version if adapter else None,
        adapter=adapter_ref(adapter, store),
        sampling=SamplingParams(
            max_tokens=max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            stop=request.stop_sequences,
        ),
        stream=request.stream,
        prompt_tokens=prompt_tokens,
    )


def sampling_record(serving: ServingContext) -> dict[str, Any]:
    s = serving.sampling
    return {
        "max_tokens": s.max_tokens,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "seed": s.seed,
        "stop": list(s.stop),
    }


# How long storing a rollout is retried while the database is unreachable: a restart or a
# fail-over takes seconds, and a streamed answer's 200 has been sent already, so giving up
# early would lose an answer the user has seen.
RECORD_RETRY_S = 20.0


def make_recorder(database: Database, *, retry_s: float = RECORD_RETRY_S) -> Recorder:
    def rollout_of(
        serving: ServingContext, messages: list[ChatMessage], outcome: Outcome, latency_ms: int
    ) -> Rollout:
        return Rollout(
            id=serving.completion_id,
            tenant_id=serving.tenant_id,
            agent_id=serving.agent_id,
            prompt_version_id=serving.prompt_version_id,
            adapter_version_id=serving.adapter_version_id,
            api_key_id=serving.api_key_id,
            messages=[dict(m) for m in messages],
            completion=outcome.text,
            sampling=sampling_record(serving),
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
            latency_ms=latency_ms,
            finish_reason=outcome.finish_reason,
            stream=serving.stream,
        )

    def record(serving: ServingContext, messages: list[ChatMessage], outcome: Outcome) -> None:
        latency_ms = int((time.perf_counter() - serving.started) * 1000)
        deadline = time.monotonic() + retry_s
        delay = 0.2
        failed_before = False
        while True:
            try:
                with database.session() as session:
                    record_rollout(session, rollout_of(serving, messages, outcome, latency_ms))
                return
            except IntegrityError:
                # A commit whose acknowledgement was lost did store the row: the id is ours.
                if failed_before and _stored(database, serving.completion_id):
                    return
                raise
            except SQLAlchemyError as exc:
                if not is_unavailable(exc) or time.monotonic() + delay > deadline:
                    raise
                failed_before = True
                logger.warning("database unavailable; retrying rollout %s", serving.completion_id)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    return record


def _stored(database: Database, completion_id: str) -> bool:
    with database.session() as session:
        return session.get(Rollout, completion_id) is not None


def version_headers(serving: ServingContext) -> dict[str, str]:
    """Which versions served the answer; `none` means the base model without an adapter."""
    return {
        "x-fastslow-prompt-version": str(serving.prompt_version or "none"),
        "x-fastslow-adapter-version": str(serving.adapter_version or "none"),
        "x-fastslow-completion-id": serving.completion_id,
    }
