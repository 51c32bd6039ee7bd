"""``python -m examples.flask``: the example on the embedded PostgreSQL (or
``$PGJOBS_DATABASE_URL``): migrates pgjobs' tables, starts ``flask pgjobs start`` for the
worker, and serves the app on http://127.0.0.1:5000 until Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from pgjobs.cli import main as cli
from pgjobs.db.urls import redact


def main() -> int:
    chosen = cli.ready_database(cli.build_parser().parse_args(["start"]))  # migrated
    os.environ["PGJOBS_DATABASE_URL"] = chosen.url  # create_app() reads it, here and in the worker
    print(f"example: database {redact(chosen.url)} ({chosen.source})", flush=True)
    from examples.flask.app import create_app

    app = create_app(chosen.url)  # creates the users table before the worker starts
    worker = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "examples.flask.app", "pgjobs", "start",
         "--skip-recurring"]
    )  # fmt: skip
    try:
        port = int(os.environ.get("PORT", "5000"))
        print(
            f"example: curl -d email=ada@example.com http://127.0.0.1:{port}/users, then "
            f"GET /users/1; the dashboard is at /jobs/ (admin / "
            f"{os.environ.get('EXAMPLE_ADMIN_PASSWORD', 'admin')})",
            flush=True,
        )
        app.run(host="127.0.0.1", port=port)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
