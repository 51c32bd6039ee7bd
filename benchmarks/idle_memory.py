"""Idle footprint of ``pgjobs start`` in both modes: RSS, PSS and USS of every process, and the
connections in ``pg_stat_activity`` by application name.

    W=2 python -m benchmarks.idle_memory [postgresql://postgres@127.0.0.1:5432]

RSS counts the shared libraries (libpq, OpenSSL, the interpreter) in full in every process; PSS
shares them out between the processes that map them; USS is what each process alone holds.
It makes (and leaves) a database ``fp_mem`` on the server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil  # type: ignore[import-untyped, unused-ignore]
import psycopg

SERVER = sys.argv[1] if len(sys.argv) > 1 else "postgresql://postgres@127.0.0.1:5432"

URL = f"{SERVER}/fp_mem"
with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
    admin.execute("DROP DATABASE IF EXISTS fp_mem")
    admin.execute("CREATE DATABASE fp_mem")
subprocess.run(
    [sys.executable, "-m", "pgjobs", "migrate", "--database-url", URL],
    check=True,
    capture_output=True,
)
work = Path(tempfile.mkdtemp())
cfg = str(work / "queue.yml")
Path(cfg).write_text(
    'development:\n  workers:\n    - queues: "*"\n      threads: 3\n'
    f"      processes: {os.environ.get('W', '1')}\n"
)
rec = str(work / "recurring.yml")
Path(rec).write_text("development: {}\n")
out = {}
for mode in ("fork", "async"):
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pgjobs",
            "start",
            "--database-url",
            URL,
            "--config",
            cfg,
            "--recurring-schedule",
            rec,
            "--mode",
            mode,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(8)
    procs = [psutil.Process(p.pid), *psutil.Process(p.pid).children(recursive=True)]
    rows = []
    for pr in procs:
        m = pr.memory_full_info()
        rows.append(
            (
                " ".join(pr.cmdline())[:60],
                round(m.rss / 2**20, 1),
                round(m.pss / 2**20, 1),
                round(m.uss / 2**20, 1),
            )
        )
    with psycopg.connect(URL) as c:
        conns = c.execute(
            "SELECT application_name, count(*) FROM pg_stat_activity WHERE datname = 'fp_mem'"
            " AND application_name LIKE 'pgjobs-%' GROUP BY 1 ORDER BY 1"
        ).fetchall()
    p.terminate()
    p.wait(20)
    out[mode] = {
        "processes": rows,
        "total_rss": round(sum(r[1] for r in rows), 1),
        "total_pss": round(sum(r[2] for r in rows), 1),
        "total_uss": round(sum(r[3] for r in rows), 1),
        "connections": conns,
    }
print(json.dumps(out, indent=1))
