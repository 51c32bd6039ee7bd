"""``manage.py pgjobs COMMAND ...``: the ``pgjobs`` command line on this project's database.

Every ``pgjobs`` command works (``start``, ``status``, ``migrate``, ``check``, ``pause``,
``resume``, ``recurring``, ``failed``, ...), with ``--database-url``, ``--schema`` and
``--config`` filled in from ``settings.PGJOBS`` and the alias's connection settings unless given.
``start`` and ``check`` import :mod:`pgjobs.contrib.django.worker`, in the supervisor and in
every process it starts: Django is set up there and every installed app's ``jobs`` module is
imported.
"""

from __future__ import annotations

import argparse
import importlib
import os
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from pgjobs.cli import main as cli
from pgjobs.contrib.django import conf, db

WORKER_APP = "pgjobs.contrib.django.worker"
# Django's own options, which manage.py has applied already: never passed on to pgjobs.
_DJANGO_OPTIONS = ("--settings", "--pythonpath")


def _strip_django_options(argv: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _DJANGO_OPTIONS:
            skip = True
        elif not arg.startswith(tuple(f"{o}=" for o in _DJANGO_OPTIONS)):
            out.append(arg)
    return out


def _command_parser(argv: list[str]) -> tuple[list[str], argparse.ArgumentParser]:
    """The (sub)command names in ``argv`` and the parser of the innermost one."""
    parser = cli.build_parser()
    names: list[str] = []
    for arg in argv:
        if arg.startswith("-"):
            continue
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is None or arg not in sub.choices:
            break
        names.append(arg)
        parser = sub.choices[arg]
    return names, parser


def _given(argv: list[str], option: str) -> bool:
    return any(arg == option or arg.startswith(option + "=") for arg in argv)


def pgjobs_argv(argv: list[str]) -> list[str]:
    """``argv`` for :func:`pgjobs.cli.main.main`, completed from the Django settings."""
    argv = _strip_django_options(argv)
    names, parser = _command_parser(argv)
    accepts = parser._option_string_actions
    if names[:1] in (["start"], ["check"]):
        if _given(argv, "--app"):
            raise CommandError(
                f"manage.py pgjobs {names[0]} imports {WORKER_APP} (Django set up, then every "
                "installed app's jobs.py): define your jobs in an app's jobs.py, or import them "
                "from there, instead of passing --app"
            )
        argv = [*argv, "--app", WORKER_APP]
    chosen = conf.load()
    if "--database-url" in accepts and not _given(argv, "--database-url"):
        argv = [*argv, "--database-url", conf.conninfo(chosen.database)]
    if "--config" in accepts and chosen.config and not _given(argv, "--config"):
        argv = [*argv, "--config", chosen.config]
    if "--schema" in accepts and not _given(argv, "--schema"):
        schema = db.schema_for(chosen)
        if schema:
            argv = [*argv, "--schema", schema]
    return argv


def _importable_project() -> None:
    """Children are fresh interpreters: make the settings' package importable from anywhere."""
    module = os.environ.get("DJANGO_SETTINGS_MODULE")
    if not module:
        return
    top = importlib.import_module(module.partition(".")[0])
    if getattr(top, "__file__", None) is None:
        return
    where = Path(str(top.__file__)).resolve().parent  # a module's directory, a package's own
    root = str(where.parent if hasattr(top, "__path__") else where)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *paths])


class Command(BaseCommand):
    help = (
        "Run the pgjobs command line on this project's database: "
        "`manage.py pgjobs start`, `status`, `migrate`, `check`, ... (`manage.py pgjobs start -h`)"
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "args", nargs=argparse.REMAINDER, metavar="COMMAND", help="a pgjobs command"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        argv = pgjobs_argv([str(a) for a in args])
        if argv[:1] == ["start"]:
            _importable_project()
        code = cli.main(argv)
        if code:
            raise SystemExit(code)
