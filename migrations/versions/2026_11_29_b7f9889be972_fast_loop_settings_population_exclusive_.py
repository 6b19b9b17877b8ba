"""fast loop settings, population, exclusive job locks

Revision ID: b7f9889be972
Revises: e60cb4dd8b57
Create Date: 2026-11-29 22:20:14.545087
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import backend.db
from sqlalchemy.dialects import postgresql

revision: str = 'b7f9889be972'
down_revision: str | None = 'e60cb4dd8b57'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing agents get empty settings (defaults) and an empty population.
    json = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("fast_loop", json, nullable=False, server_default="{}"))
        batch.add_column(sa.Column("population", json, nullable=False, server_default="[]"))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("lock_key", sa.String(length=100), nullable=True))
        batch.create_unique_constraint(op.f("uq_jobs_lock_key"), ["lock_key"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint(op.f("uq_jobs_lock_key"), type_="unique")
        batch.drop_column("lock_key")
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("population")
        batch.drop_column("fast_loop")
