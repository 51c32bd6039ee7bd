"""``python -m pgjobs.cli.demo`` (``scripts/demo``): see pgjobs running in one command.

Uses ``$PGJOBS_DATABASE_URL`` when set, else starts the embedded PostgreSQL in ``.pgjobs/``;
migrates; enqueues example jobs (ready, delayed, a bulk batch, one that fails); runs
``pgjobs start`` with ``config/queue.yml`` until Ctrl-C or for ``$DEMO_SECONDS``; then prints
how many jobs ended in each state.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pgjobs
from pgjobs.cli import main as cli
from pgjobs.cli.common import ready_database
from pgjobs.store import jobs as jobs_store


class Greet(pgjobs.Job):
    queue_as = "default"

    def perform(self, name: str) -> None:
        print(f"  [job {str(self.job_id)[:8]}] hello, {name}!", flush=True)


@pgjobs.job(queue="reports", priority=5)
def build_report(report_id: int) -> None:
    time.sleep(0.05)
    print(f"  [report] built report {report_id}", flush=True)


@pgjobs.job(queue="default")
def flaky(reason: str) -> None:
    raise RuntimeError(reason)


SUMMARY = (
    "SELECT "
    + jobs_store.state_case()
    + ", count(*) FROM {jobs} j WHERE j.created_at >= %(since)s GROUP BY 1 ORDER BY 1"
)
EARLIER = "SELECT count(*) FROM {jobs} WHERE created_at < %(since)s"


def main() -> int:
    args = cli.build_parser().parse_args(["start", "--app", "pgjobs.cli.demo"])
    chosen = ready_database(args)
    database = pgjobs.configure(chosen.url, schema=chosen.schema)
    with database.connection() as conn:
        started = conn.execute("SELECT now()").fetchone()
    since = {"since": started[0] if started else None}
    print(f"pgjobs demo: database {chosen.source}; enqueueing example jobs", flush=True)
    for name in ("Ada", "Grace", "Linus"):
        Greet.perform_later(name)
    Greet.set(wait=3).perform_later("future (delayed 3 s)")
    pgjobs.perform_all_later([build_report.build(i) for i in range(20)])
    flaky.perform_later("this job fails on purpose; see pgjobs_failed_executions")
    seconds = float(os.environ.get("DEMO_SECONDS", "0") or 0)
    if seconds:
        timer = threading.Timer(seconds, lambda: os.kill(os.getpid(), signal.SIGTERM))
        timer.daemon = True
        timer.start()
        print(f"pgjobs demo: running `pgjobs start` for {seconds:g} s", flush=True)
    else:
        print("pgjobs demo: running `pgjobs start` (Ctrl-C to stop)", flush=True)
    code = cli.main(["start", "--app", "pgjobs.cli.demo"])
    with database.connection() as conn:
        rows = conn.execute(database.sql(SUMMARY), since).fetchall()
        earlier = conn.execute(database.sql(EARLIER), since).fetchone()
    database.close()
    states = ", ".join(f"{s} {n}" for s, n in rows)
    kept = f" ({earlier[0]} more from earlier runs are kept)" if earlier and earlier[0] else ""
    print(f"pgjobs demo: this run's jobs by state: {states}{kept}", flush=True)
    return code


if __name__ == "__main__":
    # Run the copy imported as ``pgjobs.cli.demo``, so its jobs carry the names workers resolve.
    from pgjobs.cli.demo import main as demo_main

    sys.exit(demo_main())
