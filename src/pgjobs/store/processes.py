"""``pgjobs_processes``: registration, heartbeats and pruning of pgjobs processes.

A process is alive while its heartbeat is younger than the alive threshold.  A process that finds
its row gone (pruned as dead after a long stall) must stop: its jobs were already recovered.
"""

from __future__ import annotations

REGISTER = """
INSERT INTO {processes} (kind, name, hostname, pid, supervisor_id, metadata, last_heartbeat_at)
VALUES (%(kind)s, %(name)s, %(hostname)s, %(pid)s, %(supervisor_id)s, %(metadata)s::jsonb,
        %(now)s)
RETURNING id
"""

# Returns no row when the process was pruned.
HEARTBEAT = """
UPDATE {processes} SET last_heartbeat_at = %(now)s WHERE id = %(id)s RETURNING id
"""

DEREGISTER = "DELETE FROM {processes} WHERE id = %(id)s"

# Dead processes: heartbeat older than the threshold; locked so two pruners never both recover.
# Served by processes (last_heartbeat_at).
CLAIM_DEAD = """
DELETE FROM {processes} WHERE id IN (
    SELECT id FROM {processes} WHERE last_heartbeat_at < %(cutoff)s
    AND NOT (id = ANY(%(alive)s::bigint[]))  -- the caller's own children, seen alive
    ORDER BY id FOR UPDATE SKIP LOCKED
)
RETURNING id, kind, name, hostname, pid
"""

# A supervisor's own dead child, removed by id (it saw the child exit).
REMOVE = "DELETE FROM {processes} WHERE id = ANY(%(ids)s::bigint[]) RETURNING id"

# Children a supervisor registered (to clean up after them).
CHILDREN = "SELECT id, pid, name FROM {processes} WHERE supervisor_id = %(id)s"

LIST = """
SELECT p.id, p.kind, p.name, p.hostname, p.pid, p.supervisor_id, p.metadata,
       p.last_heartbeat_at, p.created_at,
       (SELECT count(*) FROM {claimed} c WHERE c.process_id = p.id) AS running
FROM {processes} p ORDER BY p.kind, p.hostname, p.pid
"""
