"""``pgjobs_recurring_tasks`` and ``pgjobs_recurring_executions``: recurring tasks and their runs.

Exactly once per tick, however many schedulers run: a tick is enqueued in ONE transaction that
first inserts its ``(task_key, run_at)`` row with ``ON CONFLICT DO NOTHING`` (:data:`CLAIM_RUN`).
The unique constraint lets one transaction win; the others get no row back and write nothing
(an insert that meets an uncommitted twin waits for it, then conflicts or, if the twin rolled
back, wins).  The winner inserts the job on the same connection and records its id
(:data:`SET_JOB_ID`) before committing.  ``pgjobs_recurring_executions`` has no foreign key to
``pgjobs_jobs``: clearing finished jobs never forgets which ticks ran.
"""

from __future__ import annotations

# Claim one tick (or a manual run) for a task: a row back means this transaction won it.
# Served by the unique constraint (task_key, run_at).
CLAIM_RUN = """
INSERT INTO {recurring_executions} (task_key, run_at, manual, created_at)
VALUES (%(key)s, %(run_at)s, %(manual)s, %(now)s)
ON CONFLICT (task_key, run_at) DO NOTHING
RETURNING id
"""

# Link a claimed run to the job enqueued for it, in the same transaction.
SET_JOB_ID = "UPDATE {recurring_executions} SET job_id = %(job_id)s WHERE id = %(id)s"

# Where each of a scheduler's tasks stands: when its row was created (no tick at or before that
# fires) and its latest scheduled (not manual) run.  Served by (task_key, run_at), backwards.
LAST_RUNS = """
SELECT t.key, t.created_at,
       (SELECT max(e.run_at) FROM {recurring_executions} e
        WHERE e.task_key = t.key AND NOT e.manual)
FROM {recurring_tasks} t WHERE t.key = ANY(%(keys)s::text[])
"""

# Serialize syncs of the static tasks (several schedulers start at once; a rolling deploy can
# run two versions of the file): a transaction-scoped advisory lock, one per tasks table.
LOCK_SYNC = "SELECT pg_advisory_xact_lock(hashtext(%(name)s))"

# A task from recurring.yml: insert, or update when something changed (the file wins over a
# dynamic task of the same key).  created_at is kept on update: it bounds the missed ticks.
UPSERT_STATIC = """
INSERT INTO {recurring_tasks} AS t (key, schedule, class_name, command, arguments, queue_name,
                                    priority, description, static, missed_policy, created_at,
                                    updated_at)
VALUES (%(key)s, %(schedule)s, %(class_name)s, %(command)s, %(arguments)s::jsonb, %(queue)s,
        %(priority)s, %(description)s, true, %(missed)s, %(now)s, %(now)s)
ON CONFLICT (key) DO UPDATE SET
    schedule = EXCLUDED.schedule, class_name = EXCLUDED.class_name, command = EXCLUDED.command,
    arguments = EXCLUDED.arguments, queue_name = EXCLUDED.queue_name,
    priority = EXCLUDED.priority, description = EXCLUDED.description, static = true,
    missed_policy = EXCLUDED.missed_policy, updated_at = EXCLUDED.updated_at
WHERE (t.schedule, t.class_name, t.command, t.arguments, t.queue_name, t.priority,
       t.description, t.static, t.missed_policy)
   IS DISTINCT FROM (EXCLUDED.schedule, EXCLUDED.class_name, EXCLUDED.command,
                     EXCLUDED.arguments, EXCLUDED.queue_name, EXCLUDED.priority,
                     EXCLUDED.description, true, EXCLUDED.missed_policy)
"""

# Static tasks that left recurring.yml.  Dynamic tasks are never touched by a sync.
DELETE_STALE_STATIC = """
DELETE FROM {recurring_tasks} WHERE static AND NOT (key = ANY(%(keys)s::text[])) RETURNING key
"""

# A dynamic task (schedule_recurring): insert or replace, never over a static one (no row back).
UPSERT_DYNAMIC = """
INSERT INTO {recurring_tasks} AS t (key, schedule, class_name, command, arguments, queue_name,
                                    priority, description, static, missed_policy, created_at,
                                    updated_at)
VALUES (%(key)s, %(schedule)s, %(class_name)s, %(command)s, %(arguments)s::jsonb, %(queue)s,
        %(priority)s, %(description)s, false, %(missed)s, %(now)s, %(now)s)
ON CONFLICT (key) DO UPDATE SET
    schedule = EXCLUDED.schedule, class_name = EXCLUDED.class_name, command = EXCLUDED.command,
    arguments = EXCLUDED.arguments, queue_name = EXCLUDED.queue_name,
    priority = EXCLUDED.priority, description = EXCLUDED.description,
    missed_policy = EXCLUDED.missed_policy, updated_at = EXCLUDED.updated_at
WHERE NOT t.static
RETURNING key
"""

# Remove a dynamic task; returns whether it was static (then nothing is deleted).
DELETE_DYNAMIC = """
WITH found AS (SELECT key, static FROM {recurring_tasks} WHERE key = %(key)s),
gone AS (DELETE FROM {recurring_tasks} t USING found
         WHERE t.key = found.key AND NOT found.static RETURNING t.key)
SELECT found.static, (SELECT count(*) FROM gone) FROM found
"""

# The task definitions columns, in the order task_from_row reads them.
_TASK_COLUMNS = """t.key, t.schedule, t.class_name, t.command, t.arguments, t.queue_name,
       t.priority, t.description, t.static, t.missed_policy"""

# Dynamic tasks, reloaded by every scheduler every few seconds (the table is small).
DYNAMIC_TASKS = (
    f"SELECT {_TASK_COLUMNS} FROM {{recurring_tasks}} t WHERE NOT t.static ORDER BY t.key"
)

# One task by key (run_now).
TASK = f"SELECT {_TASK_COLUMNS} FROM {{recurring_tasks}} t WHERE t.key = %(key)s"

# All task keys (did-you-mean for an unknown key).
TASK_KEYS = "SELECT key FROM {recurring_tasks} ORDER BY key"

# Every task with its latest run, scheduled or manual (`pgjobs recurring list`).
# The lateral lookup is served by (task_key, run_at), backwards.
LIST = f"""
SELECT {_TASK_COLUMNS}, e.run_at, e.job_id, e.manual
FROM {{recurring_tasks}} t
LEFT JOIN LATERAL (
    SELECT run_at, job_id, manual FROM {{recurring_executions}}
    WHERE task_key = t.key ORDER BY run_at DESC LIMIT 1
) e ON true
ORDER BY t.key
"""

# Retention: delete (and count) up to %(limit)s runs older than the cutoff, always keeping each
# task's latest scheduled run (it is where the scheduler resumes).  Scans the table: run hourly.
PRUNE = """
WITH keep AS (
    SELECT DISTINCT ON (task_key) id FROM {recurring_executions}
    WHERE NOT manual ORDER BY task_key, run_at DESC
), doomed AS (
    SELECT id FROM {recurring_executions}
    WHERE run_at < %(cutoff)s AND id NOT IN (SELECT id FROM keep)
    ORDER BY id LIMIT %(limit)s
), gone AS (
    DELETE FROM {recurring_executions} e USING doomed WHERE e.id = doomed.id RETURNING 1
)
SELECT count(*) FROM gone
"""
