"""``pgjobs_processes``: registration, heartbeats and pruning of pgjobs processes.

A process is alive while its heartbeat (on the database's clock) is younger than the alive
threshold.  A process that finds its row gone (pruned as dead after a long stall) must stop: its
jobs were already recovered, and its claims find no row to lock, so it claims nothing more.
"""

from __future__ import annotations

# Timestamps here are the DATABASE's clock (now()): every host's heartbeats and every pruner's
# cutoff are measured on one clock, whatever the hosts' clocks say.
REGISTER = """
INSERT INTO {processes} (kind, name, hostname, pid, supervisor_id, metadata, last_heartbeat_at)
VALUES (%(kind)s, %(name)s, %(hostname)s, %(pid)s, %(supervisor_id)s, %(metadata)s::jsonb,
        now())
-- The name is this process's alone: a conflict is our own insert whose reply was lost.
ON CONFLICT (name) DO UPDATE SET last_heartbeat_at = now()
RETURNING id
"""

# Returns no row when the process was pruned.
HEARTBEAT = """
UPDATE {processes} SET last_heartbeat_at = now() WHERE id = %(id)s RETURNING id
"""

# -- ending a process: each is one transaction that FIRST locks the process rows ---------------
#
# Why the lock comes first: a claim statement locks its process's row FOR KEY SHARE and claims
# only if the row exists (store/ready.py).  Locking the row FOR UPDATE therefore waits for a
# claim in flight (even one whose client was SIGKILLed) and stops any later one; the next
# statement of the transaction takes a new snapshot that sees every claimed row the process
# will ever have.  Deleting the rows in the same transaction means a lost reply is harmless: a
# retry either finds the work done or does all of it.

# Dead processes: heartbeat older than the threshold on the database's clock, except the
# caller's own live children.  SKIP LOCKED: a row locked by another pruner, or by its own
# process's claim in flight, is left for the next pass.  Served by processes (last_heartbeat_at).
LOCK_DEAD = """
SELECT id, kind, name, hostname, pid FROM {processes}
WHERE last_heartbeat_at < now() - make_interval(secs => %(threshold)s)
AND NOT (id = ANY(%(alive)s::bigint[]))
ORDER BY id FOR UPDATE SKIP LOCKED
"""

# Given processes, by id: a supervisor's exited child, a stopping process's own row.  Waits for
# a claim in flight; SKIP LOCKED only where the caller can come back (see LOCK_DEAD).
LOCK = """
SELECT id, kind, name, hostname, pid FROM {processes}
WHERE id = ANY(%(ids)s::bigint[]) ORDER BY id FOR UPDATE"""
LOCK_SKIP = LOCK + " SKIP LOCKED"

# Removes locked process rows.
REMOVE = "DELETE FROM {processes} WHERE id = ANY(%(ids)s::bigint[]) RETURNING id"

# Children a supervisor registered (to clean up after them).
# (id, pid, name, heartbeat older than the threshold): the last says a live child is wedged.
CHILDREN = """
SELECT id, pid, name, last_heartbeat_at < now() - make_interval(secs => %(threshold)s)
FROM {processes} WHERE supervisor_id = %(id)s
"""

LIST = """
SELECT p.id, p.kind, p.name, p.hostname, p.pid, p.supervisor_id, p.metadata,
       p.last_heartbeat_at, p.created_at,
       (SELECT count(*) FROM {claimed} c WHERE c.process_id = p.id) AS running
FROM {processes} p ORDER BY p.kind, p.hostname, p.pid
"""
