"""API keys: stored as salted hashes, shown once, with the time they were last used.
(Revocation and bad keys: test_bad_input.py; who may manage keys: test_isolation.py.)"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select

from backend.db import Database
from backend.tenants.models import ApiKey
from tests.conftest import TenantKeys


def test_keys_are_salted_hashes_shown_once(
    app_client: TestClient, tenant: TenantKeys, database: Database
) -> None:
    created = [
        app_client.post("/api/v1/keys", json={"name": f"k{i}"}, headers=tenant.headers()).json()
        for i in range(2)
    ]
    listing = app_client.get("/api/v1/keys", headers=tenant.headers())
    for key in created:
        _, lookup, secret = key["key"].split("_", 2)
        assert key["lookup"] == lookup
        assert secret not in listing.text, "the secret is shown once, at creation"
        with database.session() as session:
            row = session.scalars(select(ApiKey).where(ApiKey.id == uuid.UUID(key["id"]))).one()
        assert secret not in (row.secret_hash, row.salt, row.lookup)
        assert row.secret_hash == hashlib.sha256(f"{row.salt}:{secret}".encode()).hexdigest()
    with database.session() as session:
        salts = {
            row.salt
            for row in session.scalars(
                select(ApiKey).where(ApiKey.id.in_([uuid.UUID(k["id"]) for k in created]))
            )
        }
    assert len(salts) == 2, "every key has its own salt"


def test_last_used_time_is_kept(app_client: TestClient, tenant: TenantKeys) -> None:
    created = app_client.post("/api/v1/keys", json={"name": "u"}, headers=tenant.headers()).json()
    assert created["last_used_at"] is None
    used = app_client.get("/api/v1/me", headers={"Authorization": f"Bearer {created['key']}"})
    assert used.status_code == 200
    keys = {k["id"]: k for k in app_client.get("/api/v1/keys", headers=tenant.headers()).json()}
    last_used = datetime.fromisoformat(keys[created["id"]]["last_used_at"])
    assert datetime.now(UTC) - last_used < timedelta(minutes=1)


def test_the_last_active_admin_key_cannot_be_revoked(
    app_client: TestClient, tenant: TenantKeys
) -> None:
    """Revoking the tenant's last admin key would leave nobody able to manage it: 409, and the
    key keeps working. With a second admin key, the first can go; then the second is last."""
    h = tenant.headers()
    keys = app_client.get("/api/v1/keys", headers=h).json()
    (admin,) = [k for k in keys if k["role"] == "admin"]
    refused = app_client.delete(f"/api/v1/keys/{admin['id']}", headers=h)
    assert refused.status_code == 409, refused.text
    assert "last active admin key" in refused.json()["detail"]
    assert app_client.get("/api/v1/me", headers=h).status_code == 200, "the key still works"

    second = app_client.post(
        "/api/v1/keys", json={"name": "new admin", "role": "admin"}, headers=h
    ).json()
    h2 = {"Authorization": f"Bearer {second['key']}"}
    assert app_client.delete(f"/api/v1/keys/{admin['id']}", headers=h2).status_code == 200
    last = app_client.delete(f"/api/v1/keys/{second['id']}", headers=h2)
    assert last.status_code == 409, last.text
    # Member keys are revoked as before.
    member = next(k for k in keys if k["role"] == "member")
    assert app_client.delete(f"/api/v1/keys/{member['id']}", headers=h2).status_code == 200
