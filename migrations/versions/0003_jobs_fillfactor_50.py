"""pgjobs_jobs fillfactor 50: every finish is a heap-only (HOT) update

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 13:40:00

A job's row is updated once when it finishes (``finished_at``, ``executions``); the new version
fits on the same page only if the page kept room for it.  At fillfactor 70 a page of ~190-byte
job rows keeps room for about 45 % of its rows' new versions, so about half of all finishes were
not HOT (measured: 48 %), each writing a new version elsewhere and an entry in every index of
the table.  At 50 every row's new version fits: 100 % HOT, and the claim loop drains ~10 % faster
(docs/performance.md).  Only pages written from now on are affected: no table rewrite.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE pgjobs_jobs SET (fillfactor = 50)")


def downgrade() -> None:
    op.execute("ALTER TABLE pgjobs_jobs SET (fillfactor = 70)")
