"""Every migration upgrades and downgrades, and the models match the migrations."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from backend import migrate
from backend.db import make_engine
from backend.models import Base
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
