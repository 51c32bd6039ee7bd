"""``pgjobs_pauses``: paused queues.  A paused queue still receives jobs; workers skip it."""

from __future__ import annotations

PAUSE = """
INSERT INTO {pauses} (queue_name) VALUES (%(queue)s) ON CONFLICT (queue_name) DO NOTHING
"""
# Resuming wakes the workers so they pick the queue up at once.
RESUME = """
WITH gone AS (DELETE FROM {pauses} WHERE queue_name = %(queue)s RETURNING queue_name)
SELECT count(*), CASE WHEN count(*) > 0 THEN pg_notify(%(channel)s, %(queue)s) END FROM gone
"""
LIST = "SELECT queue_name FROM {pauses} ORDER BY queue_name"
# Since when a queue is paused (a ready job's page); served by pauses' primary key.
PAUSED_SINCE = "SELECT created_at FROM {pauses} WHERE queue_name = %(queue)s"
