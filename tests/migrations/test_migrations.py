"""Every migration upgrades and downgrades, and the models match the migrations."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Uuid, column, insert, inspect, select, table

from backend import migrate
from backend.agents.service import create_agent
from backend.db import Database, UtcDateTime, make_engine, utcnow
from backend.models import Base
from backend.rollouts.models import Feedback, Rollout
from backend.rollouts.service import record_rollout
from backend.tenants.models import Role
from backend.tenants.service import create_api_key, create_tenant
from tests.conftest import STACK, _drop_postgres_database, _postgres_database


@pytest.fixture
def empty_database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if STACK == "postgres":
        name = f"fastslow_mig_{uuid.uuid4().hex[:8]}"
        yield _postgres_database(name)
        _drop_postgres_database(name)
    else:
        yield f"sqlite:///{tmp_path_factory.mktemp('mig') / 'm.db'}"


def test_upgrade_downgrade_upgrade(empty_database_url: str) -> None:
    migrate.upgrade(empty_database_url)
    engine = make_engine(empty_database_url)
    try:
        tables = set(inspect(engine).get_table_names())
        assert set(Base.metadata.tables) <= tables
        migrate.downgrade(empty_database_url, "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        migrate.upgrade(empty_database_url)
        with engine.connect() as conn:
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
            )
        assert diff == [], f"models and migrations disagree: {diff}"
    finally:
        engine.dispose()


def test_every_revision_downgrades_and_upgrades_on_its_own(empty_database_url: str) -> None:
    """Each step, not just the whole chain: upgrade to a revision, take it back, apply it again."""
    script = ScriptDirectory.from_config(migrate.alembic_config(empty_database_url))
    assert len(script.get_heads()) == 1, f"branched migrations: {script.get_heads()}"
    revisions = list(reversed(list(script.walk_revisions())))  # oldest first
    engine = make_engine(empty_database_url)
    try:
        for revision in revisions:
            migrate.upgrade(empty_database_url, revision.revision)
            tables = set(inspect(engine).get_table_names())
            migrate.downgrade(empty_database_url, str(revision.down_revision or "base"))
            migrate.upgrade(empty_database_url, revision.revision)
            assert set(inspect(engine).get_table_names()) == tables, revision.revision
        with engine.connect() as conn:
            assert (
                MigrationContext.configure(conn).get_current_revision() == script.get_current_head()
            )
    finally:
        engine.dispose()


def test_one_rating_per_key_keeps_the_latest_of_earlier_duplicates(
    empty_database_url: str,
) -> None:
    """Ratings stored before the rule (several by one key on one completion) are reduced to
    the latest by the upgrade; ratings of other keys, and without a key, stay."""
    migrate.upgrade(empty_database_url)
    database = Database(empty_database_url)
    with database.session() as session:
        tenant, admin = create_tenant(session, name="migrated")
        member = create_api_key(session, tenant_id=tenant.id, role=Role.MEMBER, name="m")
        agent = create_agent(
            session,
            tenant_id=tenant.id,
            slug="support",
            system_prompt="Be brief.",
            demonstrations=[],
            base_model=None,
            served_base_model="m",
            reward=None,
            max_tokens_cap=8,
        )
        record_rollout(
            session,
            Rollout(
                id="chatcmpl-old",
                tenant_id=tenant.id,
                agent_id=agent.id,
                messages=[{"role": "user", "content": "Hi"}],
                completion="Hello",
                prompt_tokens=3,
                completion_tokens=1,
                finish_reason="stop",
            ),
        )
        ids = (tenant.id, agent.id, admin.api_key.id, member.api_key.id)
    database.dispose()
    migrate.downgrade(empty_database_url, "8743d0bbe91a")

    old_feedback = table(
        "feedback",
        column("id", Uuid()),
        column("tenant_id", Uuid()),
        column("rollout_id"),
        column("agent_id", Uuid()),
        column("score"),
        column("api_key_id", Uuid()),
        column("created_at", UtcDateTime()),
    )
    tenant_id, agent_id, admin_id, member_id = ids
    start = utcnow()
    rows = [  # (key, score, seconds after start)
        (member_id, -1.0, 0),
        (member_id, 0.5, 2),  # the member's latest: it stays
        (member_id, -0.5, 1),
        (admin_id, 1.0, 0),
        (None, -1.0, 0),
        (None, -1.0, 1),
    ]
    engine = make_engine(empty_database_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(old_feedback),
                [
                    {
                        "id": uuid.uuid4(),
                        "tenant_id": tenant_id,
                        "rollout_id": "chatcmpl-old",
                        "agent_id": agent_id,
                        "score": score,
                        "api_key_id": key,
                        "created_at": start + timedelta(seconds=s),
                    }
                    for key, score, s in rows
                ],
            )
        migrate.upgrade(empty_database_url)
        with engine.connect() as conn:
            kept = conn.execute(
                select(Feedback.api_key_id, Feedback.score).order_by(Feedback.score)
            ).all()
        assert sorted(kept, key=lambda r: (str(r[0]), r[1])) == sorted(
            [(member_id, 0.5), (admin_id, 1.0), (None, -1.0), (None, -1.0)],
            key=lambda r: (str(r[0]), r[1]),
        )
    finally:
        engine.dispose()
