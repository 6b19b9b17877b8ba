"""quotas: job budget, agent prompt cap, one rating per completion per key

Revision ID: 4ec0f0f8f355
Revises: 8743d0bbe91a
Create Date: 2026-12-03 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import backend.db

revision: str = "4ec0f0f8f355"
down_revision: str | None = "8743d0bbe91a"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tenant_limits") as batch:
        batch.add_column(sa.Column("jobs_per_day", sa.Integer(), nullable=True))
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("max_prompt_tokens", sa.Integer(), nullable=True))
    # One rating per (completion, key) from now on: of the ratings a key gave one completion
    # before, the latest stays (ties: the larger id); ratings without a key are not merged.
    op.execute(
        """
        DELETE FROM feedback
        WHERE api_key_id IS NOT NULL AND EXISTS (
            SELECT 1 FROM feedback AS newer
            WHERE newer.rollout_id = feedback.rollout_id
              AND newer.api_key_id = feedback.api_key_id
              AND (newer.created_at > feedback.created_at
                   OR (newer.created_at = feedback.created_at AND newer.id > feedback.id))
        )
        """
    )
    with op.batch_alter_table("feedback") as batch:
        batch.add_column(
            sa.Column("updated_at", backend.db.UtcDateTime(timezone=True), nullable=True)
        )
        batch.create_unique_constraint(
            op.f("uq_feedback_rollout_id_api_key_id"), ["rollout_id", "api_key_id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("feedback") as batch:
        batch.drop_constraint(op.f("uq_feedback_rollout_id_api_key_id"), type_="unique")
        batch.drop_column("updated_at")
    # A plain DROP COLUMN (SQLite >= 3.35 has it): batch mode would copy and drop `agents`,
    # which SQLite refuses while other tables' rows reference it (foreign keys are on).
    op.execute("ALTER TABLE agents DROP COLUMN max_prompt_tokens")
    op.execute("ALTER TABLE tenant_limits DROP COLUMN jobs_per_day")
