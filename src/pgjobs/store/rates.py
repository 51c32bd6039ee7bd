"""``pgjobs_rate_limits``: rate limits — at most ``max_starts`` jobs of a key start in any period.

A start is counted when it happens: the worker that claimed jobs of a rate-limited class takes
their start tokens (:data:`TAKE`) before it runs them.  The key's row keeps the start times still
inside its window (a sliding log, at most ``max_starts`` entries, stamped with the database's
clock once the row is locked) and is locked by the statement, so workers on every host take
tokens one after the other and a window never holds more than the limit.  A claimed job that
finds no token is not run: in the same statement it leaves claimed for the key's line — a
blocked row whose key is ``"rate|<key>"``, ordered by priority then id — and the key's
``free_at`` says when the oldest start leaves the window.  The dispatcher moves the line's next
jobs to ready at that moment, as many as the window then has room for (:data:`LOCK_DUE`, then
:data:`MOVE`), and sleeps until the next ``free_at``: waiting jobs are not polled.  A moved job
takes its token when claimed like any other (one that loses the race to a newly enqueued job, or
to jobs moved earlier and still unclaimed, goes back in line, keeping its place).

A start counts for ``period`` plus :data:`GUARD`: a job's own clock reading of its start comes a
few milliseconds after the token (the claim's reply, the thread hand-off), so the next window's
first start is spaced a little more than a period after the first start of this one.

Lines live in ``pgjobs_blocked_executions`` so that every operator action on waiting jobs (list,
cancel, discard, the job page) sees them; concurrency unblocking leaves ``rate|`` keys alone.  A
job with a concurrency limit too takes its slot before it is claimed and keeps it while in line
(discarding or cancelling it from the line gives it back: see ``blocked.DISCARD_BLOCKED``).
"""

from __future__ import annotations

LINE = "rate|"  # prefix of a rate line's blocked concurrency_key
GUARD = 0.025  # seconds a start counts beyond its period (see above)
KEYS_PER_PASS = 100  # keys whose lines the dispatcher moves per statement
MAX_LIMIT = 10_000  # starts per period: the log keeps one timestamp per start in the window

# Take start tokens for %(ids)s — claimed by %(process_id)s, all of key %(key)s, in claim order
# (priority, then id).  Only the ids this process still holds count (a re-run after a lost reply
# grants nothing to a job the first run sent to the line).  The key's row is locked and read once;
# the first jobs get as many starts as the window allows, the others leave claimed for the key's
# line, and the key's free_at becomes the moment its oldest start leaves the window.  Committed
# with synchronous_commit on, whatever the connection's setting: a start the crash of PostgreSQL
# forgot would let the window admit one more.  Returns (jobs still held, whether the key's row
# exists — when it does not, the caller inserts it with NEW_KEY and runs this again — and the ids
# granted, in claim order).  Served by claimed's and jobs' primary keys, rate_limits' primary key.
TAKE = (
    """
WITH durable AS (
    SELECT set_config('synchronous_commit', 'on', true) AS setting
), batch AS (
    SELECT j.id, j.queue_name, j.priority, j.rate_limit, j.rate_period,
           row_number() OVER (ORDER BY t.ord) AS n
    FROM unnest(%(ids)s::bigint[]) WITH ORDINALITY AS t(id, ord)
    JOIN {claimed} c ON c.job_id = t.id AND c.process_id = %(process_id)s
    JOIN {jobs} j ON j.id = t.id
), latest AS (  -- the limit and period the newest job of the batch was enqueued with
    SELECT rate_limit, rate_period FROM batch ORDER BY id DESC LIMIT 1
), locked AS (
    SELECT r.key, r.starts FROM {rates} r
    WHERE r.key = %(key)s AND EXISTS (SELECT 1 FROM batch)
    FOR UPDATE
), window_ AS (  -- the clock is read per locked row: after the lock was granted
    SELECT k.key, l.rate_limit AS max_starts, l.rate_period AS period, c.now,
           ARRAY(SELECT t FROM unnest(k.starts) AS t
                 WHERE t > c.now - l.rate_period - make_interval(secs => %(guard)s)
                 ORDER BY t) AS live
    FROM locked k CROSS JOIN latest l CROSS JOIN LATERAL (SELECT clock_timestamp() AS now) c
), tokens AS (
    SELECT w.*, least((SELECT count(*) FROM batch),
                      greatest(w.max_starts - cardinality(w.live), 0))::int AS granted
    FROM window_ w
), budget AS (
    UPDATE {rates} r SET
        max_starts = t.max_starts,
        period = t.period,
        starts = t.live || array_fill(t.now, ARRAY[t.granted]),
        granted = t.granted,
        -- none left for some: the line moves when the oldest start leaves the window
        free_at = CASE WHEN t.granted < (SELECT count(*) FROM batch)
            THEN least(coalesce(r.free_at, 'infinity'),
                       (t.live || array_fill(t.now, ARRAY[t.granted]))[1] + t.period
                       + make_interval(secs => %(guard)s))
            ELSE r.free_at END,
        updated_at = t.now
    FROM tokens t WHERE r.key = t.key
    RETURNING r.granted
), denied AS (
    SELECT b.id, b.queue_name, b.priority FROM batch b
    WHERE b.n > (SELECT granted FROM budget)
), unclaimed AS (
    DELETE FROM {claimed} c USING denied d
    WHERE c.job_id = d.id AND c.process_id = %(process_id)s
    RETURNING c.job_id
), lined AS (
    INSERT INTO {blocked} (job_id, queue_name, priority, concurrency_key, expires_at)
    SELECT d.id, d.queue_name, d.priority, '"""
    + LINE
    + """' || %(key)s, '9999-12-31 00:00:00+00'::timestamptz
    FROM denied d JOIN unclaimed u ON u.job_id = d.id
)
SELECT (SELECT count(*) FROM batch),
       EXISTS (SELECT 1 FROM budget),
       ARRAY(SELECT id FROM batch WHERE n <= (SELECT granted FROM budget) ORDER BY n),
       (SELECT setting FROM durable)
"""
)

# A key's first use: its row, with the limit and period of job %(id)s (a racing insert wins).
NEW_KEY = """
INSERT INTO {rates} (key, max_starts, period)
SELECT %(key)s, rate_limit, rate_period FROM {jobs} WHERE id = %(id)s
ON CONFLICT (key) DO NOTHING
"""

# The dispatcher, step 1 of its transaction: lock up to %(keys)s keys whose budget has freed
# (keys another dispatcher or a worker's TAKE holds are skipped).  Served by rate_limits (free_at).
LOCK_DUE = """
SELECT key FROM {rates} WHERE free_at <= clock_timestamp() ORDER BY free_at LIMIT %(keys)s
FOR UPDATE SKIP LOCKED
"""

# Step 2, a statement of its own so that its snapshot sees every job a TAKE put in these keys'
# lines before the lock was granted (and none can be added until the commit): move as many of
# each line's next jobs (priority, then id) as the window has room for to ready, and set each
# key's next free_at — when the window is full again (its oldest start plus a period, or now plus
# one if it was empty), NULL when nobody waits any more.  Returns (moved, notify).  Served by
# rate_limits' primary key, blocked (concurrency_key, priority, job_id).
MOVE = (
    """
WITH clock AS MATERIALIZED (
    SELECT clock_timestamp() AS now
), due AS (
    SELECT r.key, r.max_starts, r.period, c.now,
           ARRAY(SELECT t FROM unnest(r.starts) AS t
                 WHERE t > c.now - r.period - make_interval(secs => %(guard)s)
                 ORDER BY t) AS live
    FROM {rates} r CROSS JOIN clock c WHERE r.key = ANY(%(locked)s::text[])
), next AS (
    SELECT d.key, n.job_id, n.queue_name, n.priority FROM due d CROSS JOIN LATERAL (
        SELECT b.job_id, b.queue_name, j.priority FROM {blocked} b JOIN {jobs} j ON j.id = b.job_id
        WHERE b.concurrency_key = '"""
    + LINE
    + """' || d.key
        ORDER BY b.priority, b.job_id
        LIMIT greatest(d.max_starts - cardinality(d.live), 0)
        FOR UPDATE OF b SKIP LOCKED
    ) n
), moved AS (
    DELETE FROM {blocked} b USING next n WHERE b.job_id = n.job_id RETURNING b.job_id
), readied AS (
    INSERT INTO {ready} (job_id, queue_name, priority)
    SELECT n.job_id, n.queue_name, n.priority FROM next n JOIN moved m ON m.job_id = n.job_id
    RETURNING queue_name
), later AS (
    UPDATE {rates} r SET updated_at = d.now, free_at = CASE
        WHEN EXISTS (SELECT 1 FROM {blocked} b
                     WHERE b.concurrency_key = '"""
    + LINE
    + """' || d.key
                       AND NOT EXISTS (SELECT 1 FROM next n WHERE n.job_id = b.job_id))
        THEN coalesce(d.live[1], d.now) + d.period + make_interval(secs => %(guard)s)
        END
    FROM due d WHERE r.key = d.key
)
SELECT (SELECT count(*) FROM readied),
       (SELECT CASE WHEN count(*) > 0 THEN pg_notify(%(channel)s, '*') END FROM readied)
"""
)

# The rate limits in use (status, dashboard; %(key)s: one, the job page's): key, limit, period,
# starts in the window now, jobs waiting in line, when the line moves next.
LIST = (
    """
SELECT r.key, r.max_starts, r.period, cardinality("""
    + """ARRAY(SELECT t FROM unnest(r.starts) AS t
                 WHERE t > clock_timestamp() - r.period - make_interval(secs => %(guard)s))),
       (SELECT count(*) FROM {blocked} b WHERE b.concurrency_key = '"""
    + LINE
    + """' || r.key),
       r.free_at
FROM {rates} r WHERE %(key)s::text IS NULL OR r.key = %(key)s
ORDER BY r.key LIMIT %(limit)s
"""
)

# Forget keys with nobody in line whose last start left the window over a day ago (concurrency
# maintenance: keys taken from job arguments come and go).  Served by a scan of this small table.
FORGET_IDLE = (
    """
DELETE FROM {rates} r
WHERE r.free_at IS NULL
  AND r.updated_at < %(now)s::timestamptz - r.period - interval '1 day'
  AND NOT EXISTS (SELECT 1 FROM {blocked} b WHERE b.concurrency_key = '"""
    + LINE
    + """' || r.key)
"""
)
