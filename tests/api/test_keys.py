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
