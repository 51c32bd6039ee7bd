"""What every ``pgjobs`` command module shares: the command registry, the database options and
opening the chosen database.  The command modules import this, never :mod:`pgjobs.cli.main`,
which imports them to build the parser."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from pgjobs.config import settings
from pgjobs.db.database import Database
from pgjobs.db.revision import check_migrated
from pgjobs.db.urls import redact

Command = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, Command] = {}


def command(name: str) -> Callable[[Command], Command]:
    def register(fn: Command) -> Command:
        COMMANDS[name] = fn
        return fn

    return register


def _database_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        help="PostgreSQL URL (default: $PGJOBS_DATABASE_URL, $DATABASE_URL, queue.yml, "
        "else the embedded server in .pgjobs/)",
    )
    parser.add_argument("--schema", help="PostgreSQL schema of the pgjobs tables")
    parser.add_argument(
        "--config", help="queue.yml to read (default: $PGJOBS_CONFIG or config/queue.yml)"
    )


def database_settings(args: argparse.Namespace) -> settings.DatabaseSettings:
    from pgjobs.config.queue import load_config

    cfg = load_config(args.config)
    chosen = settings.resolve(
        args.database_url,
        schema=args.schema,
        config_url=cfg.database_url,
        config_schema=cfg.schema,
        config_direct_url=cfg.direct_database_url,
        config_transaction_pooling=cfg.transaction_pooling,
    )
    assert chosen is not None
    if chosen.embedded:
        from pgjobs.db import embedded

        where = embedded.data_directory()
        print(
            f"pgjobs: using the embedded PostgreSQL in {where} ({redact(chosen.url)})",
            file=sys.stderr,
        )
    return chosen


def ready_database(args: argparse.Namespace) -> settings.DatabaseSettings:
    """The chosen database, checked to be reachable and migrated (the embedded one is migrated)."""
    chosen = database_settings(args)
    if chosen.embedded:
        from pgjobs.db.migrate import migrate

        migrate(chosen.url, schema=chosen.schema)
    else:
        check_migrated(chosen.url, schema=chosen.schema)
    return chosen


def _open(args: argparse.Namespace) -> Database:
    chosen = ready_database(args)
    return chosen.open(pool_size=1)


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value!r}")
    return number


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
