"""Every migration upgrades and downgrades, and the models match the migrations."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
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
