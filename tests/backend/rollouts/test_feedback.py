from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from backend.db import Database
from backend.rollouts.models import Feedback
from tests.backend.helpers import chat, create_agent
from tests.conftest import TenantKeys


def _feedback_count(database: Database, completion_id: str) -> int:
    with database.session() as session:
        count = session.scalar(
            select(func.count()).select_from(Feedback).where(Feedback.rollout_id == completion_id)
        )
        return int(count or 0)


def test_rate_an_answer(app_client: TestClient, tenant: TenantKeys, database: Database) -> None:
    create_agent(app_client, tenant)
    completion = chat(app_client, tenant, "Where is my order #12345?").json()
    body = {
        "completion_id": completion["id"],
        "score": -1,
        "comment": "you did not mention my order",
        "correction": "Certainly: order #12345 ships today.",
    }
    created = app_client.post("/v1/feedback", json=body, headers=tenant.headers("member"))
    assert created.status_code == 201, created.text
    assert created.json()["completion_id"] == completion["id"]
    assert created.json()["score"] == -1

    thumbs_up = {"completion_id": completion["id"], "score": 1}
    assert (
        app_client.post("/v1/feedback", json=thumbs_up, headers=tenant.headers()).status_code == 201
    )

    rollout = app_client.get(f"/api/v1/rollouts/{completion['id']}", headers=tenant.headers())
    assert [f["score"] for f in rollout.json()["feedback"]] == [-1, 1]
    assert rollout.json()["feedback"][0]["correction"] == body["correction"]
    rated = app_client.get("/api/v1/rollouts?rated=true&agent=support", headers=tenant.headers())
    assert [r["id"] for r in rated.json()] == [completion["id"]]
    unrated = app_client.get("/api/v1/rollouts?rated=false", headers=tenant.headers())
    assert unrated.json() == []
    disliked = app_client.get("/api/v1/rollouts?max_score=-0.5", headers=tenant.headers())
    assert [r["id"] for r in disliked.json()] == [completion["id"]]
    loved = app_client.get("/api/v1/rollouts?min_score=1&max_score=1", headers=tenant.headers())
    assert [r["id"] for r in loved.json()] == [completion["id"]]
    chat(app_client, tenant, "Another question")
    assert len(app_client.get("/api/v1/rollouts", headers=tenant.headers()).json()) == 2
    assert len(app_client.get("/api/v1/rollouts?min_score=0", headers=tenant.headers()).json()) == 1


def test_idempotency_key_stores_once(
    app_client: TestClient, tenant: TenantKeys, database: Database
) -> None:
    create_agent(app_client, tenant)
    completion_id = chat(app_client, tenant, "Hi").json()["id"]
    body = {"completion_id": completion_id, "score": 0.5, "comment": "ok"}
    headers = {**tenant.headers("member"), "Idempotency-Key": "rating-1"}
    first = app_client.post("/v1/feedback", json=body, headers=headers)
    again = app_client.post("/v1/feedback", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert _feedback_count(database, completion_id) == 1

    changed = app_client.post("/v1/feedback", json={**body, "score": -1}, headers=headers)
    assert changed.status_code == 409
    assert "Idempotency-Key" in changed.json()["error"]["message"]
    assert _feedback_count(database, completion_id) == 1


def test_feedback_on_another_tenants_answer_is_404(
    app_client: TestClient, tenant: TenantKeys, other_tenant: TenantKeys, database: Database
) -> None:
    create_agent(app_client, tenant)
    completion_id = chat(app_client, tenant, "Hi").json()["id"]
    response = app_client.post(
        "/v1/feedback",
        json={"completion_id": completion_id, "score": 1},
        headers=other_tenant.headers("admin"),
    )
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"
    assert _feedback_count(database, completion_id) == 0


def test_bad_feedback(app_client: TestClient, tenant: TenantKeys, database: Database) -> None:
    create_agent(app_client, tenant)
    completion_id = chat(app_client, tenant, "Hi").json()["id"]
    h = tenant.headers("member")
    cases = [
        ({"completion_id": completion_id, "score": 1.5}, 400),
        ({"completion_id": completion_id, "score": -2}, 400),
        ({"completion_id": completion_id}, 400),
        ({"completion_id": "chatcmpl-missing", "score": 1}, 404),
        ({"completion_id": completion_id, "score": 1, "extra": True}, 400),
    ]
    for body, status in cases:
        response = app_client.post("/v1/feedback", json=body, headers=h)
        assert response.status_code == status, (body, response.text)
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    malformed = app_client.post(
        "/v1/feedback", content=b"{not json", headers={**h, "content-type": "application/json"}
    )
    assert malformed.status_code == 400
    assert _feedback_count(database, completion_id) == 0


def test_one_rating_per_completion_per_key(
    app_client: TestClient, tenant: TenantKeys, database: Database
) -> None:
    """A key that rates an answer again updates its rating: no stuffed votes, and no new
    feedback for the fast loop's trigger."""
    create_agent(app_client, tenant, fast_loop={"min_new_feedback": 2})
    completion_id = chat(app_client, tenant, "Where is my order?").json()["id"]
    member = tenant.headers("member")
    first = app_client.post(
        "/v1/feedback", json={"completion_id": completion_id, "score": -1}, headers=member
    )
    assert first.status_code == 201, first.text
    assert first.json()["updated_at"] is None
    for score in (1, 0.5, 1):
        again = app_client.post(
            "/v1/feedback",
            json={"completion_id": completion_id, "score": score, "comment": "changed my mind"},
            headers=member,
        )
        assert again.status_code == 200, again.text
        assert again.json()["id"] == first.json()["id"]
        assert again.json()["score"] == score and again.json()["updated_at"] is not None
    assert again.json()["created_at"] == first.json()["created_at"]
    assert _feedback_count(database, completion_id) == 1

    status = app_client.get("/api/v1/agents/support/fast-loop", headers=tenant.headers()).json()
    assert status["new_ratings"] == 1 and status["due_reason"] is None
    # Another key's rating is a vote of its own (and makes the loop due).
    other = app_client.post(
        "/v1/feedback", json={"completion_id": completion_id, "score": -1}, headers=tenant.headers()
    )
    assert other.status_code == 201
    assert _feedback_count(database, completion_id) == 2
    status = app_client.get("/api/v1/agents/support/fast-loop", headers=tenant.headers()).json()
    assert status["new_ratings"] == 2 and status["due_reason"] is not None

    rollout = app_client.get(f"/api/v1/rollouts/{completion_id}", headers=tenant.headers())
    assert sorted(f["score"] for f in rollout.json()["feedback"]) == [-1, 1]


def test_idempotency_key_on_an_updated_rating(
    app_client: TestClient, tenant: TenantKeys, database: Database
) -> None:
    create_agent(app_client, tenant)
    completion_id = chat(app_client, tenant, "Hi").json()["id"]
    member = tenant.headers("member")
    body = {"completion_id": completion_id, "score": 1}
    first = app_client.post("/v1/feedback", json=body, headers={**member, "Idempotency-Key": "k1"})
    assert first.status_code == 201
    update = {**body, "score": -1, "correction": "Hello! How can I help?"}
    headers = {**member, "Idempotency-Key": "k2"}
    changed = app_client.post("/v1/feedback", json=update, headers=headers)
    replay = app_client.post("/v1/feedback", json=update, headers=headers)
    assert (changed.status_code, replay.status_code) == (200, 200)
    assert changed.json() == replay.json()
    assert changed.json()["id"] == first.json()["id"] and changed.json()["score"] == -1
    conflict = app_client.post("/v1/feedback", json=body, headers=headers)
    assert conflict.status_code == 409
    assert _feedback_count(database, completion_id) == 1
