"""concurrency limits and unique jobs

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 13:20:00

The columns are nullable and the index partial: adding them rewrites nothing and is instant on
a table of any size (``ADD COLUMN`` without a default only touches the catalog).  The unique
index is built with a plain ``CREATE INDEX`` inside the migration's transaction: on an existing
jobs table it only has to read it, and every existing row has ``unique_key`` NULL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("pgjobs_jobs", sa.Column("concurrency_limit", sa.Integer(), nullable=True))
    op.add_column("pgjobs_jobs", sa.Column("concurrency_duration", sa.Interval(), nullable=True))
    op.add_column("pgjobs_jobs", sa.Column("concurrency_on_conflict", sa.Text(), nullable=True))
    op.add_column(
        "pgjobs_scheduled_executions", sa.Column("concurrency_key", sa.Text(), nullable=True)
    )
    op.create_index(
        "uq_pgjobs_jobs_unique_key",
        "pgjobs_jobs",
        ["unique_key"],
        unique=True,
        postgresql_where=sa.text("unique_key IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index(
        "uq_pgjobs_jobs_unique_key",
        table_name="pgjobs_jobs",
        postgresql_where=sa.text("unique_key IS NOT NULL"),
    )
    op.drop_column("pgjobs_scheduled_executions", "concurrency_key")
    op.drop_column("pgjobs_jobs", "concurrency_on_conflict")
    op.drop_column("pgjobs_jobs", "concurrency_duration")
    op.drop_column("pgjobs_jobs", "concurrency_limit")
