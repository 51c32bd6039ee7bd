"""The physical-limit proxy: what PostgreSQL does on this machine with no job queue in the way.

- **insert**: one client, one-row ``INSERT`` + commit per transaction (the ceiling for single
  enqueue: one durable commit per job);
- **paced insert**: the same one-row ``INSERT`` at the latency scenario's rate (``pgbench -R``):
  what one durable commit costs when the machine is otherwise idle between transactions, the
  floor under an enqueue→start latency (an enqueue commit, then a claim commit);
- **claim**: ``DELETE ... WHERE id IN (SELECT id ... LIMIT 100 FOR UPDATE SKIP LOCKED)`` on a
  pre-filled scratch table, from one client and from two (a ceiling for a drain's claim step).

With ``pgbench`` on the PATH (Debian: ``postgresql-contrib`` / ``postgresql-15``) it runs the
loops (``-M prepared``); otherwise the same loops written with psycopg (prepared statements), and
the report says which.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from benchmarks.common import Databases, Summary, percentile

INSERT_SECONDS = 5
PACED_SECONDS = 5
CLAIM_BATCH = 100
CLAIM_TX = {1: 1500, 2: 1000}  # transactions per client, by clients
FILL_ROWS = 250_000

SETUP = """
CREATE TABLE bench_insert (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, payload text);
CREATE TABLE bench_claim (id bigint PRIMARY KEY, payload text);
"""
INSERT = "INSERT INTO bench_insert (payload) VALUES ('{\"i\": 1}')"
CLAIM = (
    "DELETE FROM bench_claim WHERE id IN (SELECT id FROM bench_claim ORDER BY id "
    f"LIMIT {CLAIM_BATCH} FOR UPDATE SKIP LOCKED)"
)


def measure(
    url: str, dbs: Databases, repeat: int, rate: float, say: Callable[[str], None]
) -> dict[str, Any]:
    pgbench = shutil.which("pgbench")
    inserts: list[float] = []
    paced: dict[str, list[float]] = {"p50": [], "p95": [], "p99": []}
    claims: dict[int, list[float]] = {1: [], 2: []}
    with dbs.fresh("scratch") as scratch:
        with psycopg.connect(scratch, autocommit=True) as conn:
            conn.execute(SETUP)
        for r in range(repeat):
            inserts.append(_insert(scratch, pgbench))
            latencies = _paced_insert(scratch, pgbench, rate)
            for key, q in (("p50", 50), ("p95", 95), ("p99", 99)):
                paced[key].append(percentile(latencies, q))
            for clients in (1, 2):
                _fill(scratch)
                claims[clients].append(_claim(scratch, pgbench, clients))
            say(
                f"  limits #{r + 1}: insert {inserts[-1]:,.0f}/s (at {rate:g}/s: p50 "
                f"{paced['p50'][-1]:.2f} ms, p99 {paced['p99'][-1]:.2f} ms), claim "
                f"{claims[1][-1]:,.0f} rows/s (1 client), {claims[2][-1]:,.0f} rows/s (2 clients)"
            )
    return {
        "tool": f"pgbench ({_pgbench_version(pgbench)}), -M prepared"
        if pgbench
        else "psycopg loops (pgbench not found), prepared statements",
        "insert": {"unit": "commits/s", **Summary.of(inserts).as_dict()},
        "paced_insert": {
            "rate": rate,
            **{
                key: {"unit": "ms", **Summary.of(values).as_dict()} for key, values in paced.items()
            },
        },
        "claim_1": {"unit": "rows/s", **Summary.of(claims[1]).as_dict()},
        "claim_2": {"unit": "rows/s", **Summary.of(claims[2]).as_dict()},
        "insert_sql": INSERT,
        "claim_sql": CLAIM,
    }


def _fill(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE bench_claim")
        conn.execute(
            "INSERT INTO bench_claim SELECT g, 'x' FROM generate_series(1, %s) g", (FILL_ROWS,)
        )
        conn.execute("VACUUM ANALYZE bench_claim")


# -- pgbench --------------------------------------------------------------------------------


def _pgbench_version(pgbench: str) -> str:
    out = subprocess.run([pgbench, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip()


def _pgbench_args(url: str) -> tuple[list[str], dict[str, str], str]:
    """pgbench's connection options, environment and database name for ``url``."""
    info = conninfo_to_dict(url)
    env = {**os.environ}
    if info.get("password"):
        env["PGPASSWORD"] = str(info["password"])
    conn_args = []
    for flag, key in (("-h", "host"), ("-p", "port"), ("-U", "user")):
        if info.get(key):
            conn_args += [flag, str(info[key])]
    return conn_args, env, str(info["dbname"])


def _paced_insert(url: str, pgbench: str | None, rate: float) -> list[float]:
    """Latencies (ms) of one-row INSERT transactions sent at ``rate`` per second."""
    if not pgbench:
        out = []
        with psycopg.connect(url, autocommit=True) as conn:
            start = time.perf_counter()
            for k in range(int(rate * PACED_SECONDS)):
                time.sleep(max(0.0, start + k / rate - time.perf_counter()))
                began = time.perf_counter()
                conn.execute(INSERT, prepare=True)
                out.append((time.perf_counter() - began) * 1000)
        return out
    conn_args, env, dbname = _pgbench_args(url)
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "script.sql"
        script.write_text(INSERT + ";\n")
        subprocess.run(
            [pgbench, "-n", "-M", "prepared", *conn_args, "-c", "1", "-R", f"{rate:g}",
             "-T", str(PACED_SECONDS), "-l", "--log-prefix", str(Path(tmp) / "log"),
             "-f", str(script), dbname],
            capture_output=True, text=True, env=env, check=True,
        )  # fmt: skip
        # Per-transaction log: client, transaction, latency in microseconds, ...
        return [
            int(line.split()[2]) / 1000
            for log in Path(tmp).glob("log.*")
            for line in log.read_text().splitlines()
        ]


def _pgbench(url: str, pgbench: str, script: str, *args: str) -> float:
    conn_args, env, dbname = _pgbench_args(url)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "script.sql"
        path.write_text(script + ";\n")
        out = subprocess.run(
            [
                pgbench,
                "-n",
                "-M",
                "prepared",
                *conn_args,
                *args,
                "-f",
                str(path),
                dbname,
            ],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
    match = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out.stdout)
    if not match:
        raise RuntimeError(f"cannot read pgbench's output:\n{out.stdout}\n{out.stderr}")
    return float(match.group(1))


def _insert(url: str, pgbench: str | None) -> float:
    if pgbench:
        return _pgbench(url, pgbench, INSERT, "-c", "1", "-T", str(INSERT_SECONDS))
    with psycopg.connect(url, autocommit=True) as conn:
        count, deadline = 0, time.perf_counter() + INSERT_SECONDS
        started = time.perf_counter()
        while time.perf_counter() < deadline:
            conn.execute(INSERT, prepare=True)
            count += 1
        return count / (time.perf_counter() - started)


def _claim(url: str, pgbench: str | None, clients: int) -> float:
    transactions = CLAIM_TX[clients]
    if pgbench:
        tps = _pgbench(
            url, pgbench, CLAIM, "-c", str(clients), "-j", str(clients), "-t", str(transactions)
        )
        return tps * CLAIM_BATCH

    def loop() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            for _ in range(transactions):
                conn.execute(CLAIM, prepare=True)

    threads = [threading.Thread(target=loop) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return clients * transactions * CLAIM_BATCH / (time.perf_counter() - started)
