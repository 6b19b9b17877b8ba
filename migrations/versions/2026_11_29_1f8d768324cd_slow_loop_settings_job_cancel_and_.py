"""slow loop settings, job cancel and attempts

Revision ID: 1f8d768324cd
Revises: b7f9889be972
Create Date: 2026-11-29 23:44:26.941149
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import backend.db
from sqlalchemy.dialects import postgresql

revision: str = '1f8d768324cd'
down_revision: str | None = 'b7f9889be972'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing rows get the defaults: empty settings, not cancelled, never attempted.
    json = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("slow_loop", json, nullable=False, server_default="{}"))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("attempts")
        batch.drop_column("cancel_requested")
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("slow_loop")
