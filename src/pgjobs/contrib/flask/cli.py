"""``flask pgjobs COMMAND``: every ``pgjobs`` command, with the Flask app's settings.

``flask --app myapp pgjobs migrate``, ``... pgjobs start``, ``... pgjobs status``, ``... pgjobs
web`` (the dashboard on its own), and so on: the arguments after the command's name go to
``pgjobs`` unchanged (``flask pgjobs start --help`` prints its options).  The app's
``PGJOBS_DATABASE_URL`` (or PostgreSQL ``SQLALCHEMY_DATABASE_URI``), ``PGJOBS_SCHEMA`` and
``PGJOBS_CONFIG`` are handed over in the environment, so the processes ``pgjobs start`` starts
inherit them; options given on the command line still win.

``start`` (and ``check``) import :mod:`pgjobs.contrib.flask.worker` in the supervisor and in every
child: it creates the Flask app from the same import path as ``flask --app`` (``FLASK_APP``, or
``wsgi.py``/``app.py``), so the jobs the app imports are known and every job runs in the app's
context.  Jobs must therefore be imported when the app is created (as the views that enqueue them
usually do); ``--app`` is refused.
"""

from __future__ import annotations

import argparse
import os

import click
from flask import current_app
from flask.cli import AppGroup, ScriptInfo

from pgjobs.cli import main as cli
from pgjobs.contrib.flask.config import settings

WORKER_MODULE = "pgjobs.contrib.flask.worker"
APP_ENV = "PGJOBS_FLASK_APP"  # the import path `flask --app` was given, for the worker module
_APP_COMMANDS = ("start", "check")  # the commands that import an application module

pgjobs_group = AppGroup(
    "pgjobs", help="pgjobs' commands (migrate, start, status, web, ...) with this app's settings."
)


def _environment() -> None:
    """Hand the app's settings to pgjobs (and its child processes) in the environment."""
    found = settings(current_app)
    for name, value in (
        ("PGJOBS_DATABASE_URL", found.url),
        ("PGJOBS_SCHEMA", found.schema),
        ("PGJOBS_CONFIG", found.config),
    ):
        if value is not None:
            os.environ[name] = value


def _arguments(ctx: click.Context, name: str, args: list[str]) -> list[str]:
    if name not in _APP_COMMANDS:
        return [name, *args]
    if any(a == "--app" or a.startswith("--app=") for a in args):
        raise click.UsageError(
            f"flask pgjobs {name} imports the Flask app in every process (its jobs with it): "
            "drop --app, and import your jobs where the app is created"
        )
    info = ctx.find_object(ScriptInfo)
    path = info.app_import_path if info is not None else None
    if path is None and info is not None and info.create_app is not None:
        raise click.UsageError(
            f"flask pgjobs {name} needs the app's import path, to create the app in pgjobs' "
            "processes: give flask --app (or FLASK_APP)"
        )
    os.environ[APP_ENV] = path or ""
    return [name, "--app", WORKER_MODULE, *args]


def _add(name: str, help_text: str | None) -> None:
    @pgjobs_group.command(
        name,
        help=help_text,
        add_help_option=False,  # --help goes to pgjobs' own parser
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    @click.pass_context
    def run(ctx: click.Context, args: tuple[str, ...]) -> None:
        argv = _arguments(ctx, name, list(args))
        _environment()
        ctx.exit(cli.main(argv))


def _commands() -> list[tuple[str, str | None]]:
    """pgjobs' commands and their help, from its parser (so new commands appear here too)."""
    parser = cli.build_parser()
    for action in parser._actions:  # argparse keeps the subcommands there, and only there
        if isinstance(action, argparse._SubParsersAction):
            return [(a.dest, a.help) for a in action._choices_actions]
    raise AssertionError("pgjobs' parser has no commands")


for _name, _help in _commands():
    _add(_name, _help)
