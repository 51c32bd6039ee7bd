"""The chaos suite: three hosts, one PostgreSQL, random faults for N minutes, then checks.

Run it (skipped otherwise)::

    scripts/test tests/chaos --chaos-minutes 1                    # what CI runs
    scripts/test tests/chaos --chaos-minutes 30 --chaos-seed 7 --chaos-report chaos.json

Three ``pgjobs start`` supervisors (``PGJOBS_HOSTNAME`` host-a, host-b, host-c; 2 worker
processes and a dispatcher each) run on one dedicated embedded PostgreSQL, each through its own
TCP proxy (:mod:`.proxy`).  A mixed workload (:mod:`.workload`) writes every execution to a
ledger in another database (:mod:`.ledger`); among it, batches and workflows (chains, diamonds,
fan-out/fan-in, random DAGs under each ``on_failure`` policy; some with a job that fails for
good, some of those retried or discarded by an operator) whose callbacks record every run.  The
driver (:mod:`.driver`) injects, one at a time: SIGKILL of a worker; SIGKILL of a whole host
(then a replacement starts); SIGSTOP/SIGCONT of a worker, shorter or longer than
``process_alive_threshold``; ``pg_terminate_backend`` of pgjobs connections; a PostgreSQL
restart; an outage longer than the threshold; a partition of one host (the proxy black-holes its
traffic, sockets stay open) shorter or longer than the threshold.

Then it heals everything, lets the queue drain, and checks (:mod:`.checks`, :mod:`.run`): every
job finished, or failed for a documented reason (the poison pill with ``ProcessExitError``, the
kinds that fail for good with their error), or is a workflow job held behind a failed job
(``on_failure="wait"``); no two runs of one job overlapped, and no concurrency limit or unique
key was exceeded, except when the older run's process was frozen or partitioned past the
threshold (at-least-once), and even then the job's final state is its newest run's outcome; no
job ran again after a run of it succeeded unless a fault excuses losing that run's end; no
claimed row outlived its process row (or a blocked job its free slot) past a grace; every
supervisor nobody killed is still running and exits 0 on SIGTERM.  For batches and workflows
(:mod:`.batch_checks`): each callback job is written at most once and exactly when its moment
came, runs once (again only after a fault cut its run short) and after every job of its batch
ended; each batch's counts are its jobs' final states; a workflow job never starts before its
dependencies succeeded (or, with ``on_failure="run"``, ended), and none is left held once they
ended.  The summary (faults by kind, jobs, runs, violations with evidence; batches and
workflows) is printed, and written as JSON to ``--chaos-report``; the hosts' logs and the ledger
are kept under ``.pgjobs/chaos-<pid>/run`` when there are violations.
"""
