"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-23 11:13:41.283904
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = ("pgjobs",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pgjobs_blocked_executions",
        sa.Column("job_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("queue_name", sa.Text(), nullable=False),
        sa.Column("priority", sa.SmallInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("concurrency_key", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_pgjobs_blocked_executions")),
    )
    op.create_index(
        op.f("ix_pgjobs_blocked_executions_concurrency_key_priority_job_id"),
        "pgjobs_blocked_executions",
        ["concurrency_key", "priority", "job_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_pgjobs_blocked_executions_expires_at_concurrency_key"),
        "pgjobs_blocked_executions",
        ["expires_at", "concurrency_key"],
        unique=False,
    )
    op.create_table(
        "pgjobs_claimed_executions",
        sa.Column("job_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("process_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_pgjobs_claimed_executions")),
        postgresql_with={
            "fillfactor": 90,
            "autovacuum_vacuum_scale_factor": 0.01,
            "autovacuum_vacuum_threshold": 1000,
            "autovacuum_analyze_scale_factor": 0.02,
        },
    )
    op.create_index(
        op.f("ix_pgjobs_claimed_executions_process_id_job_id"),
        "pgjobs_claimed_executions",
        ["process_id", "job_id"],
        unique=False,
    )
    op.create_table(
        "pgjobs_failed_executions",
        sa.Column("job_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("exception_class", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("backtrace", sa.Text(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("process_id", sa.BigInteger(), nullable=True),
        sa.Column("hostname", sa.Text(), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_pgjobs_failed_executions")),
    )
    op.create_index(
        op.f("ix_pgjobs_failed_executions_created_at_job_id"),
        "pgjobs_failed_executions",
        ["created_at", "job_id"],
        unique=False,
    )
    op.create_table(
        "pgjobs_job_errors",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("exception_class", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("backtrace", sa.Text(), nullable=False),
        sa.Column("process_id", sa.BigInteger(), nullable=True),
        sa.Column("hostname", sa.Text(), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pgjobs_job_errors")),
    )
    op.create_index(
        op.f("ix_pgjobs_job_errors_job_id_id"), "pgjobs_job_errors", ["job_id", "id"], unique=False
    )
    op.create_table(
        "pgjobs_jobs",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("job_id", sa.UUID(), nullable=False),
        sa.Column("queue_name", sa.Text(), nullable=False),
        sa.Column("class_name", sa.Text(), nullable=False),
        sa.Column(
            "arguments",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("priority", sa.SmallInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("executions", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("interruptions", sa.SmallInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("concurrency_key", sa.Text(), nullable=True),
        sa.Column("unique_key", sa.Text(), nullable=True),
        sa.Column("scheduled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("discarded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pgjobs_jobs")),
        postgresql_with={"fillfactor": 70, "autovacuum_vacuum_scale_factor": 0.05},
    )
    op.create_index(
        op.f("ix_pgjobs_jobs_class_name_id"), "pgjobs_jobs", ["class_name", "id"], unique=False
    )
    op.create_index(op.f("ix_pgjobs_jobs_job_id"), "pgjobs_jobs", ["job_id"], unique=True)
    op.create_table(
        "pgjobs_pauses",
        sa.Column("queue_name", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("queue_name", name=op.f("pk_pgjobs_pauses")),
    )
    op.create_table(
        "pgjobs_processes",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("hostname", sa.Text(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("supervisor_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "metadata",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "last_heartbeat_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pgjobs_processes")),
        sa.UniqueConstraint("name", name=op.f("uq_pgjobs_processes_name")),
    )
    op.create_index(
        op.f("ix_pgjobs_processes_last_heartbeat_at"),
        "pgjobs_processes",
        ["last_heartbeat_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_pgjobs_processes_supervisor_id"),
        "pgjobs_processes",
        ["supervisor_id"],
        unique=False,
    )
    op.create_table(
        "pgjobs_ready_executions",
        sa.Column("job_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("queue_name", sa.Text(), nullable=False),
        sa.Column("priority", sa.SmallInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_pgjobs_ready_executions")),
        postgresql_with={
            "fillfactor": 90,
            "autovacuum_vacuum_scale_factor": 0.01,
            "autovacuum_vacuum_threshold": 1000,
            "autovacuum_analyze_scale_factor": 0.02,
        },
    )
    op.create_index(
        op.f("ix_pgjobs_ready_executions_priority_job_id"),
        "pgjobs_ready_executions",
        ["priority", "job_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_pgjobs_ready_executions_queue_name_priority_job_id"),
        "pgjobs_ready_executions",
        ["queue_name", "priority", "job_id"],
        unique=False,
    )
    op.create_table(
        "pgjobs_recurring_executions",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("task_key", sa.Text(), nullable=False),
        sa.Column("run_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=True),
        sa.Column("manual", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pgjobs_recurring_executions")),
        sa.UniqueConstraint(
            "task_key", "run_at", name=op.f("uq_pgjobs_recurring_executions_task_key_run_at")
        ),
    )
    op.create_index(
        op.f("ix_pgjobs_recurring_executions_job_id"),
        "pgjobs_recurring_executions",
        ["job_id"],
        unique=False,
    )
    op.create_table(
        "pgjobs_recurring_tasks",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("schedule", sa.Text(), nullable=False),
        sa.Column("class_name", sa.Text(), nullable=True),
        sa.Column("command", sa.Text(), nullable=True),
        sa.Column(
            "arguments",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("queue_name", sa.Text(), nullable=True),
        sa.Column("priority", sa.SmallInteger(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("static", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("missed_policy", sa.Text(), server_default=sa.text("'skip'"), nullable=False),
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
        sa.PrimaryKeyConstraint("key", name=op.f("pk_pgjobs_recurring_tasks")),
    )
    op.create_table(
        "pgjobs_scheduled_executions",
        sa.Column("job_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("queue_name", sa.Text(), nullable=False),
        sa.Column("priority", sa.SmallInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("scheduled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_pgjobs_scheduled_executions")),
        postgresql_with={
            "fillfactor": 90,
            "autovacuum_vacuum_scale_factor": 0.01,
            "autovacuum_vacuum_threshold": 1000,
            "autovacuum_analyze_scale_factor": 0.02,
        },
    )
    op.create_index(
        op.f("ix_pgjobs_scheduled_executions_scheduled_at_priority_job_id"),
        "pgjobs_scheduled_executions",
        ["scheduled_at", "priority", "job_id"],
        unique=False,
    )
    op.create_table(
        "pgjobs_semaphores",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("value", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
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
        sa.PrimaryKeyConstraint("key", name=op.f("pk_pgjobs_semaphores")),
    )
    op.create_index(
        op.f("ix_pgjobs_semaphores_expires_at"), "pgjobs_semaphores", ["expires_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_pgjobs_semaphores_expires_at"), table_name="pgjobs_semaphores")
    op.drop_table("pgjobs_semaphores")
    op.drop_index(
        op.f("ix_pgjobs_scheduled_executions_scheduled_at_priority_job_id"),
        table_name="pgjobs_scheduled_executions",
    )
    op.drop_table("pgjobs_scheduled_executions")
    op.drop_table("pgjobs_recurring_tasks")
    op.drop_index(
        op.f("ix_pgjobs_recurring_executions_job_id"), table_name="pgjobs_recurring_executions"
    )
    op.drop_table("pgjobs_recurring_executions")
    op.drop_index(
        op.f("ix_pgjobs_ready_executions_queue_name_priority_job_id"),
        table_name="pgjobs_ready_executions",
    )
    op.drop_index(
        op.f("ix_pgjobs_ready_executions_priority_job_id"), table_name="pgjobs_ready_executions"
    )
    op.drop_table("pgjobs_ready_executions")
    op.drop_index(op.f("ix_pgjobs_processes_supervisor_id"), table_name="pgjobs_processes")
    op.drop_index(op.f("ix_pgjobs_processes_last_heartbeat_at"), table_name="pgjobs_processes")
    op.drop_table("pgjobs_processes")
    op.drop_table("pgjobs_pauses")
    op.drop_index(op.f("ix_pgjobs_jobs_job_id"), table_name="pgjobs_jobs")
    op.drop_index(op.f("ix_pgjobs_jobs_class_name_id"), table_name="pgjobs_jobs")
    op.drop_table("pgjobs_jobs")
    op.drop_index(op.f("ix_pgjobs_job_errors_job_id_id"), table_name="pgjobs_job_errors")
    op.drop_table("pgjobs_job_errors")
    op.drop_index(
        op.f("ix_pgjobs_failed_executions_created_at_job_id"), table_name="pgjobs_failed_executions"
    )
    op.drop_table("pgjobs_failed_executions")
    op.drop_index(
        op.f("ix_pgjobs_claimed_executions_process_id_job_id"),
        table_name="pgjobs_claimed_executions",
    )
    op.drop_table("pgjobs_claimed_executions")
    op.drop_index(
        op.f("ix_pgjobs_blocked_executions_expires_at_concurrency_key"),
        table_name="pgjobs_blocked_executions",
    )
    op.drop_index(
        op.f("ix_pgjobs_blocked_executions_concurrency_key_priority_job_id"),
        table_name="pgjobs_blocked_executions",
    )
    op.drop_table("pgjobs_blocked_executions")
