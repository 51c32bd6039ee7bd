"""flow control: rate limits (pgjobs_rate_limits, rate columns on pgjobs_jobs)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 04:00:00

Rate limits (docs/flow-control.md) store a job's rate key, limit and period on its row — three
nullable columns without defaults, a catalog change only (no rewrite, no long lock) — and one row
per key in the new ``pgjobs_rate_limits``: the start times still inside the key's window, and
when its waiting jobs may next be moved to ready.  Ordered keys need no schema: they are
concurrency limits of one (``concurrency_on_conflict`` = ``ordered``/``ordered_continue``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("pgjobs_jobs", sa.Column("rate_key", sa.Text(), nullable=True))
    op.add_column("pgjobs_jobs", sa.Column("rate_limit", sa.Integer(), nullable=True))
    op.add_column("pgjobs_jobs", sa.Column("rate_period", sa.Interval(), nullable=True))
    op.create_table(
        "pgjobs_rate_limits",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("max_starts", sa.Integer(), nullable=False),
        sa.Column("period", sa.Interval(), nullable=False),
        sa.Column(
            "starts",
            postgresql.ARRAY(sa.DateTime(timezone=True)),
            server_default=sa.text("'{}'::timestamptz[]"),
            nullable=False,
        ),
        sa.Column("granted", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("free_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_pgjobs_rate_limits")),
    )
    op.create_index(
        op.f("ix_pgjobs_rate_limits_free_at"),
        "pgjobs_rate_limits",
        ["free_at"],
        unique=False,
        postgresql_where=sa.text("free_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_pgjobs_rate_limits_free_at"),
        table_name="pgjobs_rate_limits",
        postgresql_where=sa.text("free_at IS NOT NULL"),
    )
    op.drop_table("pgjobs_rate_limits")
    for name in ("rate_period", "rate_limit", "rate_key"):
        op.drop_column("pgjobs_jobs", name)
