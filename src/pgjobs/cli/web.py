"""``pgjobs web``: serve the dashboard on its own (``pip install "pgjobs[web]"``).

::

    PGJOBS_WEB_USERNAME=admin PGJOBS_WEB_PASSWORD=... pgjobs web [--host 127.0.0.1] [--port 8080]
    pgjobs web --no-auth            # only on a loopback address
    pgjobs web --read-only

The database is chosen like every other command's (``--database-url``, ``PGJOBS_DATABASE_URL``,
queue.yml, else the embedded server).  Without credentials (``PGJOBS_WEB_USERNAME`` and
``PGJOBS_WEB_PASSWORD``, or ``web:`` in queue.yml) it refuses to start unless ``--no-auth`` is
given, and it refuses ``--no-auth`` on an address other than a loopback one.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys

from pgjobs.cli.common import _database_options, command, ready_database
from pgjobs.config.queue import Config, load_config
from pgjobs.db.urls import redact
from pgjobs.errors import ConfigurationError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
INSTALL_HINT = 'the dashboard needs its extra dependencies: pip install "pgjobs[web]"'
NO_CREDENTIALS = (
    "pgjobs web needs credentials: set PGJOBS_WEB_USERNAME and PGJOBS_WEB_PASSWORD (or username "
    "and password under web: in queue.yml), or pass --no-auth to serve it without a login on a "
    "loopback address"
)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost; anything else may be reachable from other machines."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"not a TCP port: {value!r}")
    return port


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("web", help='serve the dashboard (needs pip install "pgjobs[web]")')
    _database_options(p)
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on ({DEFAULT_HOST})")
    p.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"port ({DEFAULT_PORT})")
    p.add_argument(
        "--no-auth",
        action="store_true",
        help="serve without a login (refused unless --host is a loopback address)",
    )
    p.add_argument("--read-only", action="store_true", help="hide and refuse every action")
    p.add_argument(
        "--root-path", default="", help="the URL prefix a reverse proxy serves it under (/jobs)"
    )
    p.add_argument("--log-level", default="info", help="uvicorn's log level (info)")
    p.add_argument(
        "--app", help="a module to import first, registering your job names (for Run now)"
    )


def _has_credentials(config: Config) -> bool:
    env = os.environ
    return bool(
        (env.get("PGJOBS_WEB_USERNAME") and env.get("PGJOBS_WEB_PASSWORD"))
        or (config.web.username and config.web.password)
    )


@command("web")
def _web(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from pgjobs.web import create_app
    except ImportError as exc:
        print(f"pgjobs: error: {INSTALL_HINT} ({exc.name} is missing)", file=sys.stderr)
        return 1
    if args.no_auth and not is_loopback(args.host):
        raise ConfigurationError(
            f"--no-auth is refused on {args.host}, which other machines may reach: serve on "
            "127.0.0.1 (behind your own proxy), or set PGJOBS_WEB_USERNAME and PGJOBS_WEB_PASSWORD"
        )
    config = load_config(args.config)
    app_module = args.app or config.app
    if app_module:  # job names registered by the app's modules, as `pgjobs start --app` does
        from pgjobs.cli.application import import_application

        import_application(app_module)
    if not args.no_auth and not _has_credentials(config):
        raise ConfigurationError(NO_CREDENTIALS)
    chosen = ready_database(args)
    database = chosen.open(application_name="pgjobs-web")
    app = create_app(
        database,
        no_auth=args.no_auth,
        read_only=True if args.read_only else None,
        config=config,
    )
    host = f"[{args.host}]" if ":" in args.host else args.host
    where = f"http://{host}:{args.port}{args.root_path}/"
    print(f"pgjobs: dashboard of {redact(chosen.url)} at {where}", file=sys.stderr)
    try:
        uvicorn.run(
            app, host=args.host, port=args.port, root_path=args.root_path, log_level=args.log_level
        )
    finally:
        database.close()
    return 0
