from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime

from backend.http.deps import SessionDep
from backend.rollouts import service
from backend.rollouts.schemas import FeedbackCreate, FeedbackRead, RolloutRead
from backend.rollouts.service import RolloutView
from backend.tenants.deps import AdminDep, MemberDep

feedback_router = APIRouter(prefix="/v1", tags=["openai"])
router = APIRouter(prefix="/rollouts", tags=["rollouts"])


@feedback_router.post(
    "/feedback",
    status_code=201,
    response_model=FeedbackRead,
    responses={
        200: {
            "model": FeedbackRead,
            "description": "This key's earlier rating of the completion, updated; or a replay "
            "of an Idempotency-Key",
        }
    },
)
def create_feedback(
    body: FeedbackCreate,
    caller: MemberDep,
    session: SessionDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> JSONResponse:
    """Rate an answer by its completion id. One rating per completion per API key: rating it
    again updates the rating (200). Send an `Idempotency-Key` header to make retries safe:
    the same key stores the rating once."""
    feedback, created = service.submit_feedback(
        session,
        tenant_id=caller.tenant_id,
        completion_id=body.completion_id,
        score=body.score,
        comment=body.comment,
        correction=body.correction,
        idempotency_key=idempotency_key,
        api_key_id=caller.key_id,
    )
    return JSONResponse(
        FeedbackRead.model_validate(feedback).model_dump(mode="json"),
        status_code=201 if created else 200,
    )


def _read(view: RolloutView) -> RolloutRead:
    r = view.rollout
    return RolloutRead(
        id=r.id,
        agent=view.agent,
        prompt_version=view.prompt_version,
        adapter_version=view.adapter_version,
        messages=r.messages,
        completion=r.completion,
        sampling=r.sampling,
        prompt_tokens=r.prompt_tokens,
        completion_tokens=r.completion_tokens,
        latency_ms=r.latency_ms,
        finish_reason=r.finish_reason,
        stream=r.stream,
        created_at=r.created_at,
        feedback=[FeedbackRead.model_validate(f) for f in view.feedback],
    )


@router.get("", response_model=list[RolloutRead])
def list_rollouts(
    caller: AdminDep,
    session: SessionDep,
    agent: str | None = None,
    rated: bool | None = None,
    min_score: float | None = Query(None, ge=-1, le=1, description="Rated at least this."),
    max_score: float | None = Query(None, ge=-1, le=1, description="Rated at most this."),
    # With a time zone: a naive time would be a guess (and the database refuses it).
    since: AwareDatetime | None = None,
    before: AwareDatetime | None = Query(None, description="Page back: rollouts older than this."),
    limit: int = Query(50, ge=1, le=500),
) -> list[RolloutRead]:
    """Recent rollouts with their feedback, newest first."""
    views = service.list_rollouts(
        session,
        tenant_id=caller.tenant_id,
        agent_slug=agent,
        rated=rated,
        min_score=min_score,
        max_score=max_score,
        since=since,
        before=before,
        limit=limit,
    )
    return [_read(v) for v in views]


@router.get("/{rollout_id}", response_model=RolloutRead)
def get_rollout(rollout_id: str, caller: AdminDep, session: SessionDep) -> RolloutRead:
    return _read(service.get_rollout(session, tenant_id=caller.tenant_id, rollout_id=rollout_id))
