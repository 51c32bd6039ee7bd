"""Importing the application module that ``--app`` names (``pgjobs start``, ``web``, ``check``).

What goes wrong there is the user's first contact with pgjobs, so it reads like every other
pgjobs error — one ``pgjobs: error:`` line — and shows a traceback only when the application's
own code failed, and then only the application's frames (not importlib's, not pgjobs').
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from pathlib import Path
from types import ModuleType

from pgjobs.errors import ConfigurationError

_NOT_THE_APPLICATIONS = (
    "<frozen ",  # importlib's bootstrap
    str(Path(importlib.__file__).resolve().parent),  # importlib.import_module itself
    str(Path(__file__).resolve().parent),  # pgjobs
)


def import_application(name: str) -> ModuleType:
    """Import ``name``, with the current directory first on ``sys.path`` (as ``python -m`` has).

    A module that does not exist: ConfigurationError naming it and where it was looked for.  An
    error raised while the application's module runs: its traceback (the application's frames)
    on stderr, then ConfigurationError saying so.
    """
    here = os.getcwd()
    if here not in sys.path:
        sys.path.insert(0, here)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (name == missing or name.startswith(missing + ".")):
            raise ConfigurationError(
                f"--app {name}: there is no module {missing!r} (looked in the current directory "
                f"{here} and on PYTHONPATH): run pgjobs from your project's directory, or add "
                "that directory to PYTHONPATH"
            ) from None
        _application_traceback(exc)
        raise _failed(name, exc) from None
    except Exception as exc:
        _application_traceback(exc)
        raise _failed(name, exc) from None


def _failed(name: str, exc: BaseException) -> ConfigurationError:
    return ConfigurationError(
        f"--app {name}: importing it raised {type(exc).__name__}: {exc} "
        "(the application's traceback is above)"
    )


def _application_traceback(exc: BaseException) -> None:
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith(_NOT_THE_APPLICATIONS)
    ]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames)]
    lines += traceback.format_exception_only(type(exc), exc)
    sys.stderr.write("".join(lines))
