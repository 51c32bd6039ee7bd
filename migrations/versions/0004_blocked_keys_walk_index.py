"""pgjobs_blocked_executions: index (concurrency_key, expires_at) for the maintenance walk

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 01:30:00

Concurrency maintenance used to read ``DISTINCT concurrency_key ... WHERE expires_at < now
LIMIT 1000`` through ``(expires_at, concurrency_key)``: no order and no cursor, so with more than
1,000 keys holding legitimately expired blocked jobs a key whose unblock was missed could stay
out of reach forever.  It now walks every key in order, a page of keys per statement, each key's
oldest expiry being the first entry after the previous key in ``(concurrency_key, expires_at)``:
one index descent per key, whatever its backlog.  The old index served nothing else.

The blocked table is small (jobs waiting for a slot): a plain ``CREATE INDEX`` in the migration's
transaction is brief.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        op.f("ix_pgjobs_blocked_executions_concurrency_key_expires_at"),
        "pgjobs_blocked_executions",
        ["concurrency_key", "expires_at"],
    )
    op.drop_index(
        op.f("ix_pgjobs_blocked_executions_expires_at_concurrency_key"),
        table_name="pgjobs_blocked_executions",
    )


def downgrade() -> None:
    op.create_index(
        op.f("ix_pgjobs_blocked_executions_expires_at_concurrency_key"),
        "pgjobs_blocked_executions",
        ["expires_at", "concurrency_key"],
    )
    op.drop_index(
        op.f("ix_pgjobs_blocked_executions_concurrency_key_expires_at"),
        table_name="pgjobs_blocked_executions",
    )
