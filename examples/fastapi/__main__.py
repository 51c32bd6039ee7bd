"""``python -m examples.fastapi``: the example on the embedded PostgreSQL (or
``$PGJOBS_DATABASE_URL``): migrates pgjobs' tables, starts ``pgjobs start`` for the worker, and
serves the app on http://127.0.0.1:8000 until Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import uvicorn

from pgjobs.cli import main as cli
from pgjobs.db.urls import redact


def main() -> int:
    chosen = cli.ready_database(cli.build_parser().parse_args(["start"]))  # migrated
    os.environ["PGJOBS_DATABASE_URL"] = chosen.url  # for the worker below
    print(f"example: database {redact(chosen.url)} ({chosen.source})", flush=True)
    worker = subprocess.Popen(
        [sys.executable, "-m", "pgjobs", "start", "--app", "examples.fastapi.app",
         "--skip-recurring"]
    )  # fmt: skip
    try:
        from examples.fastapi.app import create_app

        port = int(os.environ.get("PORT", "8000"))
        print(
            f"example: POST http://127.0.0.1:{port}/users?email=ada@example.com, then "
            f"GET /users/1; the dashboard is at /jobs (admin / "
            f"{os.environ.get('EXAMPLE_ADMIN_PASSWORD', 'admin')})",
            flush=True,
        )
        uvicorn.run(create_app(chosen.url), host="127.0.0.1", port=port)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
