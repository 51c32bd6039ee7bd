"""``pgjobs batches list|show``: batches and workflows newest first, and one with its progress,
callbacks, nested batches and jobs (with their states and dependencies).  The command opens its
own connections, so the batches are committed (``db``: emptied after each test); their jobs are
ended with the row changes a worker's statements make (the triggers count them)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import psycopg
import pytest

import pgjobs
from pgjobs.db.database import Database
from tests import engine_helpers
from tests.workflow_jobs import Callback, Part

pytestmark = pytest.mark.committed


def pgjobs_cli(db: Database, *argv: str) -> int:
    return engine_helpers.pgjobs_cli(db.url, *argv)


def _sql(db: Database, statement: str, job: pgjobs.Job) -> None:
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute(statement, {"job_id": job.job_id})


def succeed(db: Database, job: pgjobs.Job) -> None:
    _sql(
        db,
        "WITH r AS (DELETE FROM pgjobs_ready_executions WHERE job_id = "
        "(SELECT id FROM pgjobs_jobs WHERE job_id = %(job_id)s) RETURNING job_id) "
        "UPDATE pgjobs_jobs SET finished_at = now(), executions = 1 WHERE id IN (SELECT * FROM r)",
        job,
    )


def fail(db: Database, job: pgjobs.Job) -> None:
    _sql(
        db,
        "WITH r AS (DELETE FROM pgjobs_ready_executions WHERE job_id = "
        "(SELECT id FROM pgjobs_jobs WHERE job_id = %(job_id)s) RETURNING job_id) "
        "INSERT INTO pgjobs_failed_executions (job_id, exception_class, message, backtrace, "
        "attempt, batch_id) SELECT r.job_id, 'RuntimeError', 'boom', '', 1, j.batch_id "
        "FROM r JOIN pgjobs_jobs j ON j.id = r.job_id",
        job,
    )


def test_batches_list_newest_first_with_filters_and_pages(
    db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    with pgjobs.batch(description="import a.csv") as batch:
        batch.add(Part.build("a"), Part.build("b"), Part.build("c"))
    a, b, _ = batch._jobs
    succeed(db, a)
    fail(db, b)
    with pgjobs.workflow(description="nightly") as wf:
        first = wf.add(Part.build("x"))
        wf.add(Part.build("y"), after=[first])
    done = pgjobs.Batch.of([], description="empty")  # settled at once: succeeded

    assert pgjobs_cli(db, "batches", "list") == 0
    out = capsys.readouterr().out
    order = [out.index(str(x.batch_id)) for x in (done, wf, batch)]
    assert order == sorted(order)  # newest first
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if str(batch.batch_id) in line)
    assert "batch" in lines[at] and "running" in lines[at] and "import a.csv" in lines[at]
    assert lines[at + 1].strip() == (
        "2/3 ended: 1 succeeded, 1 failed, 0 discarded, 0 cancelled; 1 pending"
    )

    def listed(*argv: str) -> list[str]:
        assert pgjobs_cli(db, "batches", "list", *argv, "--json") == 0
        return [b["batch_id"] for b in json.loads(capsys.readouterr().out)]

    assert listed("--kind", "workflow") == [str(wf.batch_id)]
    assert listed("--kind", "batch") == [str(done.batch_id), str(batch.batch_id)]
    assert listed("--state", "running") == [str(wf.batch_id), str(batch.batch_id)]
    assert listed("--state", "succeeded") == [str(done.batch_id)]
    assert listed("--state", "failed") == []
    assert pgjobs_cli(db, "batches", "list", "--json") == 0
    found = {b["batch_id"]: b for b in json.loads(capsys.readouterr().out)}
    shown = found[str(batch.batch_id)]
    assert (shown["kind"], shown["state"], shown["total"], shown["done"]) == (
        "batch",
        "running",
        3,
        2,
    )
    assert (shown["succeeded"], shown["failed"], shown["pending"]) == (1, 1, 1)
    assert shown["description"] == "import a.csv" and shown["finished_at"] is None

    # Keyset pages, newest first.
    assert pgjobs_cli(db, "batches", "list", "--limit", "2") == 0
    first_page = capsys.readouterr().out
    assert str(done.batch_id) in first_page and str(batch.batch_id) not in first_page
    cursor = first_page.rsplit("next page: --before ", 1)[1].strip()
    assert pgjobs_cli(db, "batches", "list", "--limit", "2", "--before", cursor) == 0
    second_page = capsys.readouterr().out
    assert str(batch.batch_id) in second_page and "next page" not in second_page
    assert pgjobs_cli(db, "batches", "list", "--state", "failed") == 0
    assert "(no batches)" in capsys.readouterr().out


def test_batches_show_a_workflow_with_its_jobs_and_dependencies(
    db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    with pgjobs.workflow(
        description="etl",
        properties={"source": "s3"},
        on_finish=Callback.build("finish"),
        on_discard=Callback.build("discard"),
    ) as wf:
        fetch = wf.add(Part.build("fetch"))
        parse = wf.add(Part.build("parse"), after=[fetch])
        store = wf.add(Part.build("store"), after=[parse, fetch])
        inner = wf.batch(description="inner")
        inner.add(Part.build("side"))
    succeed(db, fetch)
    info = pgjobs.get_batch(wf.batch_id)

    assert pgjobs_cli(db, "batches", "show", str(wf.batch_id)) == 0
    out = capsys.readouterr().out
    assert f"batch          {wf.batch_id} (id {info.id})" in out
    assert "kind           workflow (on failure: cancel)" in out
    assert "state          running" in out and "description    etl" in out
    assert (
        "progress       1/4 ended: 1 succeeded, 0 failed, 0 discarded, 0 cancelled; 3 pending"
        in out
    )
    assert 'properties     {"source": "s3"}' in out
    assert f"on_finish      {info.callbacks['finish']} (not written yet)" in out
    assert "jobs           1 held, 1 ready, 1 finished" in out
    assert f"{inner.batch_id}  batch     running    0/1 ended" in out
    rows = {line.split()[1]: line.split()[2] for line in out.splitlines() if "tests.Part" in line}
    assert rows == {str(fetch.job_id): "finished", str(parse.job_id): "ready",
                    str(store.job_id): "held"}  # fmt: skip
    assert f"after {parse.job_id}, {fetch.job_id}" in out  # store's dependencies, in order

    fail(db, parse)  # on_failure cancel: store is cancelled; on_discard is written
    assert pgjobs_cli(db, "batches", "show", str(wf.batch_id), "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert (
        shown["progress"] == "3/4 ended: 1 succeeded, 1 failed, 0 discarded, 1 cancelled; 1 pending"
    )
    assert shown["callbacks"] == {
        "finish": {"job_id": str(info.callbacks["finish"]), "written": False},
        "discard": {"job_id": str(info.callbacks["discard"]), "written": True},
    }
    assert shown["jobs_by_state"] == {"finished": 1, "failed": 1, "cancelled": 1}
    assert [child["batch_id"] for child in shown["nested"]] == [str(inner.batch_id)]
    assert [(j["job_id"], j["state"], j["depends_on"]) for j in shown["jobs"]] == [
        (str(fetch.job_id), "finished", []),
        (str(parse.job_id), "failed", [str(fetch.job_id)]),
        (str(store.job_id), "cancelled", [str(parse.job_id), str(fetch.job_id)]),
    ]
    assert shown["next_after"] is None

    assert pgjobs_cli(db, "batches", "show", str(wf.batch_id), "--state", "cancelled") == 0
    out = capsys.readouterr().out
    rows = {line.split()[1]: line.split()[2] for line in out.splitlines() if "tests.Part" in line}
    assert rows == {str(store.job_id): "cancelled"}
    assert pgjobs_cli(db, "batches", "show", str(wf.batch_id), "--state", "running") == 0
    assert "(no running jobs)" in capsys.readouterr().out


def test_batches_show_pages_its_jobs(db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    with pgjobs.batch() as batch:
        batch.add(Part.build(str(i)) for i in range(5))
    ids = [str(job.job_id) for job in batch._jobs]

    def shown(*argv: str) -> dict[str, object]:
        assert pgjobs_cli(db, "batches", "show", str(batch.batch_id), *argv, "--json") == 0
        data: dict[str, object] = json.loads(capsys.readouterr().out)
        return data

    first = shown("--limit", "3")
    assert [j["job_id"] for j in first["jobs"]] == ids[:3]  # type: ignore[attr-defined]
    assert isinstance(first["next_after"], int)
    second = shown("--limit", "3", "--after", str(first["next_after"]))
    assert [j["job_id"] for j in second["jobs"]] == ids[3:]  # type: ignore[attr-defined]
    assert second["next_after"] is None
    assert pgjobs_cli(db, "batches", "show", str(batch.batch_id), "--limit", "3") == 0
    assert f"next page: --after {first['next_after']}" in capsys.readouterr().out


def test_bad_batch_ids_and_options(db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as usage:
        pgjobs_cli(db, "batches", "show", "nope")
    assert usage.value.code == 2
    assert "argument BATCH_ID: 'nope' is not a batch id (a UUID)" in capsys.readouterr().err
    missing = uuid.uuid4()
    assert pgjobs_cli(db, "batches", "show", str(missing)) == 1
    assert f"pgjobs: error: BATCH_ID: no batch or workflow {missing}" in capsys.readouterr().err
    for argv, said in (
        (("list", "--kind", "job"), "argument --kind: invalid choice: 'job'"),
        (("list", "--state", "done"), "argument --state: invalid choice: 'done'"),
        (("list", "--limit", "0"), "argument --limit: must be a positive integer, got '0'"),
        (("list", "--before", "x"), "argument --before: must be a positive integer, got 'x'"),
        (("show", str(missing), "--state", "pending"), "argument --state: invalid choice"),
        (("show", str(missing), "--after", "-1"), "argument --after: must be a row id"),
    ):
        with pytest.raises(SystemExit) as usage:
            pgjobs_cli(db, "batches", *argv)
        assert usage.value.code == 2, argv
        assert said in capsys.readouterr().err, argv


def test_batches_list_needs_none_of_the_dashboards_packages(db: Database) -> None:
    """``pgjobs batches`` runs where ``pgjobs[web]`` is not installed."""
    batch = pgjobs.Batch.of([Part.build("a")], description="no web")
    code = (
        "import sys\n"
        "for name in ('jinja2', 'starlette', 'python_multipart', 'multipart'):\n"
        "    sys.modules[name] = None  # import raises ImportError\n"
        "from pgjobs.cli.main import main\n"
        "status = main(['batches', 'list', '--database-url', sys.argv[1]])\n"
        "status |= main(['batches', 'show', sys.argv[2], '--database-url', sys.argv[1]])\n"
        "sys.exit(status)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, db.url, str(batch.batch_id)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(str(batch.batch_id)) == 2 and "no web" in done.stdout
