"""pgjobs_jobs: job control columns (result, progress, checkpoint, cancel_requested_at,
cancelled_at)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 01:00:00

Results you can wait for, progress, resumable steps and cancellation (docs/jobs.md) keep their
state on the job's row.  ``result`` is ``json`` (kept as written, so a returned dict's keys keep
their order; it is never queried), the others ``jsonb``.  Every column is nullable without a
default, so adding them is a catalog change only (no table rewrite, no long lock), and a job that
uses none of them stores nothing: its row is as wide as before (the null bitmap of 24 columns is
still 3 bytes).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSONB = ("progress", "checkpoint")
_TIMES = ("cancel_requested_at", "cancelled_at")


def upgrade() -> None:
    # json, not jsonb: stored as written (a result's keys keep their order), never queried.
    op.add_column("pgjobs_jobs", sa.Column("result", postgresql.JSON(), nullable=True))
    for name in _JSONB:
        op.add_column("pgjobs_jobs", sa.Column(name, postgresql.JSONB(), nullable=True))
    for name in _TIMES:
        op.add_column("pgjobs_jobs", sa.Column(name, sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    for name in (*_TIMES, *_JSONB, "result"):
        op.drop_column("pgjobs_jobs", name)
