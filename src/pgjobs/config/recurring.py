"""Recurring tasks as declared: ``config/recurring.yml`` (Solid Queue's format) and the tasks it
describes (:class:`RecurringTask`); the tasks in the database, dynamic tasks and manual runs are
:mod:`pgjobs.operations.recurring`.

A task enqueues a job class (``class:``) or runs a plain function as a job (``command:``, run by
:class:`RunCommand`) on a schedule (:mod:`pgjobs.config.schedules`).  The scheduler process
(:mod:`pgjobs.processes.scheduler`) enqueues each tick exactly once however many schedulers run;
``docs/recurring.md`` describes the file, the policies for missed ticks and the guarantees.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pgjobs.config.queue import non_empty_string as _text
from pgjobs.config.queue import positive_int as _limit
from pgjobs.config.schedules import Schedule, parse_schedule
from pgjobs.config.yamlfile import (
    Problems,
    describe,
    did_you_mean,
    line_of,
    load_settings,
    resolve_env,
)
from pgjobs.enqueue.handle import MAX_PRIORITY, MIN_PRIORITY
from pgjobs.errors import ConfigurationError, PgJobsError, UnknownJobError
from pgjobs.jobs.base import Job, JobFunction, Options, resolve
from pgjobs.serialization import serialize_arguments

__all__ = [
    "RecurringTask", "RunCommand", "dynamic_task", "heartbeat_log", "load_recurring", "parse_tasks",
]  # fmt: skip

log = logging.getLogger("pgjobs")
MissedPolicy = Literal["skip", "catch_up", "latest"]
MISSED_POLICIES: tuple[MissedPolicy, ...] = ("skip", "catch_up", "latest")
DEFAULT_PATH = Path("config/recurring.yml")
DEFAULT_CATCH_UP_LIMIT = 100
TASK_KEYS = frozenset(
    ("class", "command", "args", "kwargs", "queue", "priority", "schedule", "description",
     "missed", "catch_up_limit")
)  # fmt: skip
_ENVIRONMENTS = frozenset(("development", "test", "production", "staging", "default"))
_QUEUE = re.compile(r"[A-Za-z0-9_.:-]+")


@dataclass(frozen=True)
class RecurringTask:
    """One recurring task: ``class_name`` (a job) or ``command`` (a function), never both."""

    key: str
    schedule: Schedule
    class_name: str | None = None
    command: str | None = None
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    queue: str | None = None
    priority: int | None = None
    description: str | None = None
    missed: MissedPolicy = "skip"
    catch_up_limit: int = DEFAULT_CATCH_UP_LIMIT
    static: bool = True

    @property
    def job_class_name(self) -> str:
        return self.class_name or RunCommand.job_name

    @property
    def missed_policy(self) -> str:
        """The policy as stored in the tasks table: ``catch_up:<limit>`` keeps the limit."""
        return f"catch_up:{self.catch_up_limit}" if self.missed == "catch_up" else self.missed

    def build_job(self) -> Job:
        """A new job for one run (raises UnknownJobError when the class cannot be found)."""
        args = (self.command, *self.args) if self.command else self.args
        job = resolve(self.job_class_name)(*args, **self.kwargs)
        return job.with_options(Options(queue=self.queue, priority=self.priority))


class RunCommand(Job):
    """Runs a task's ``command``: imports ``module:function`` and calls it with the task's args."""

    job_name = "pgjobs.recurring:RunCommand"  # its stored name, from before the module moved

    def perform(self, command: str, /, *args: Any, **kwargs: Any) -> Any:
        result = import_command(command)(*args, **kwargs)
        return asyncio.run(result) if inspect.iscoroutine(result) else result


# pgjobs' own commands under the module path they had before the layout of issue 23, which
# recurring.yml files and stored dynamic tasks may still name.
_MOVED = {"pgjobs.recurring": "pgjobs.config.recurring"}


def import_command(path: str) -> Callable[..., Any]:
    """The callable at ``module:qualname`` (or ``module.name``); raises ValueError saying why."""
    module_name, sep, qualname = path.partition(":")
    if not sep:
        module_name, _, qualname = path.rpartition(".")
    if not module_name or not qualname:
        raise ValueError(f"must be an import path like 'myapp.tasks:purge', got {path!r}")
    module_name = _MOVED.get(module_name, module_name)
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or the module failed while importing
        message = f"command {path!r}: module {module_name!r} cannot be imported: {exc}"
        raise ValueError(message) from None
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if not callable(obj):
        raise ValueError(f"command {path!r}: {module_name!r} has no callable {qualname!r}")
    return obj  # type: ignore[no-any-return]


def heartbeat_log(message: str = "recurring heartbeat: the pgjobs scheduler is running") -> None:
    """A harmless command for examples (``config/recurring.yml``): logs one line."""
    log.info("%s", message)


# -- validation (shared by recurring.yml and schedule_recurring) ---------------------------------


def _plain(value: Any) -> Any:
    """YAML values (YamlMap/YamlList subclasses) as plain dicts and lists, for serialization."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    return [_plain(item) for item in value] if isinstance(value, list) else value


def _priority(value: Any) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not MIN_PRIORITY <= value <= MAX_PRIORITY
    ):
        raise ValueError(
            f"must be an integer from {MIN_PRIORITY} to {MAX_PRIORITY}, got {describe(value)}"
        )
    return value


def _queue(value: Any) -> str:
    if not isinstance(value, str) or not _QUEUE.fullmatch(value):
        raise ValueError(f'must be a queue name (letters, digits, "_.:-"), got {describe(value)}')
    return value


def _missed(value: Any) -> MissedPolicy:
    for policy in MISSED_POLICIES:
        if value == policy:
            return policy
    hint = did_you_mean(str(value), MISSED_POLICIES) or "expected skip, catch_up or latest"
    raise ValueError(f"unknown policy {describe(value)}; {hint}")


def _schedule(value: Any) -> Schedule:
    if isinstance(value, Schedule):
        return value
    try:
        return parse_schedule(_text(value))
    except ConfigurationError as exc:
        raise ValueError(str(exc)) from None


def _class(value: Any) -> str:
    try:
        resolve(_text(value))
    except UnknownJobError as exc:
        raise ValueError(str(exc)) from None
    except Exception as exc:  # the module failed while importing
        raise ValueError(f"job class {value!r}: importing it failed: {exc!r}") from None
    return str(value)


def _command(value: Any) -> str:
    import_command(_text(value))
    return str(value)


def _kwargs(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"must be a mapping of keyword arguments, got {describe(value)}")
    return dict(value)


def _check_args(task: RecurringTask) -> None:
    """Raise ValueError when the arguments cannot be stored or do not fit the callee."""
    context = f"recurring task {task.key!r}"
    try:
        serialize_arguments(task.args, task.kwargs, context=context)
    except PgJobsError as exc:
        raise ValueError(str(exc)) from None
    target = import_command(task.command) if task.command else resolve(task.job_class_name).perform
    try:
        try:
            signature = inspect.signature(target, eval_str=True)
        except NameError:
            signature = inspect.signature(target)
    except (TypeError, ValueError):
        return  # a builtin: no signature to check
    parameters = list(signature.parameters.values())[0 if task.command else 1 :]  # not self
    signature = signature.replace(parameters=parameters, return_annotation=signature.empty)
    name = task.command or f"{task.job_class_name}.perform"
    try:
        signature.bind(*task.args, **task.kwargs)
    except TypeError as exc:
        raise ValueError(f"the arguments do not fit {name}{signature}: {exc}") from None


# -- config/recurring.yml ----------------------------------------------------------------------


def load_recurring(
    path: str | Path | None = None,
    *,
    env: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[RecurringTask]:
    """The static tasks of ``recurring.yml`` for ``env`` (default ``PGJOBS_ENV``/development).

    The file is ``path``, else ``$PGJOBS_RECURRING_SCHEDULE``, else ``config/recurring.yml`` if it
    exists (no file: no tasks).  A file made of environment sections without one for ``env`` has
    no tasks there.  Raises ConfigurationError listing every problem, with file:line.
    """
    environ = os.environ if environ is None else environ
    env = resolve_env(env, environ)
    origin = ""
    if path is None and environ.get("PGJOBS_RECURRING_SCHEDULE"):
        path, origin = environ["PGJOBS_RECURRING_SCHEDULE"], " (set by PGJOBS_RECURRING_SCHEDULE)"
    if path is None:
        if not DEFAULT_PATH.is_file():
            return []
        path = DEFAULT_PATH
    elif not Path(path).is_file():
        why = "is not a file" if Path(path).exists() else "does not exist"
        raise ConfigurationError(problems=[f"{path}: the recurring schedule file {why}{origin}"])
    problems = Problems(path)
    keys, sectioned = _layout(Path(path), env)
    if sectioned and env not in keys:
        if hint := did_you_mean(env, keys):
            problems.add(f"no section for environment {env!r}; {hint} (select one with PGJOBS_ENV)")
            problems.raise_if_any()
        return []
    known = frozenset() if sectioned else frozenset(keys)  # flat: the top-level keys are tasks
    settings = load_settings(path, known_keys=known, problems=problems, env=env, environ=environ)
    tasks = parse_tasks(settings, problems)
    problems.raise_if_any()
    return tasks


def _layout(path: Path, env: str) -> tuple[list[str], bool]:
    """The top-level keys, and whether they are environments rather than tasks.

    Tasks have task settings (schedule, class, ...); otherwise keys named like environments, or
    only mappings two levels down, make sections.  (An unreadable file: load_settings says why.)
    """
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return [], False
    if not isinstance(root, yaml.MappingNode):
        return [], False
    pairs = [(str(k.value), v) for k, v in root.value if k.tag != "tag:yaml.org,2002:merge"]
    keys = [key for key, _ in pairs]
    inner = [n for _, v in pairs if isinstance(v, yaml.MappingNode) for n in v.value]
    if any(k.value in TASK_KEYS for k, _ in inner):
        return keys, False
    nested = all(isinstance(v, yaml.MappingNode) or v.tag.endswith(":null") for _, v in inner)
    return keys, nested or any(key in _ENVIRONMENTS or key == env for key in keys)


def parse_tasks(settings: Mapping[str, Any], problems: Problems) -> list[RecurringTask]:
    """Tasks from one environment's settings; problems are recorded, bad tasks left out."""
    tasks = []
    for key, entry in settings.items():
        task = _parse_task(key, entry, line_of(settings, key), problems)
        if task is not None:
            tasks.append(task)
    return tasks


def _parse_task(key: str, entry: Any, line: int | None, problems: Problems) -> RecurringTask | None:
    if not isinstance(entry, Mapping):
        message = f"must be a mapping of task settings (schedule, class...), got {describe(entry)}"
        problems.add(message, line=line, where=key)
        return None
    before = len(problems)
    problems.check_keys(entry, TASK_KEYS, key)
    if ("class" in entry) == ("command" in entry):
        which = "both" if "class" in entry else "neither"
        message = f"task {key!r} has {which} class and command: give a job class or a command"
        problems.add(message, line=line, where=key)
    if entry.get("schedule") is None:
        problems.add("missing schedule (e.g. 'every hour')", line=line, where=key)
    schedule = problems.take(entry, "schedule", _schedule, None, key)
    args = _plain(entry.get("args"))
    missed: MissedPolicy = problems.take(entry, "missed", _missed, "skip", key)
    if "catch_up_limit" in entry and missed != "catch_up":
        at = line_of(entry, "catch_up_limit")
        problems.add("applies only with missed: catch_up", line=at, where=f"{key}.catch_up_limit")
    task = RecurringTask(
        key=key,
        schedule=schedule or parse_schedule("@yearly"),
        class_name=problems.take(entry, "class", _class, None, key),
        command=problems.take(entry, "command", _command, None, key),
        args=tuple(args) if isinstance(args, list) else (() if args is None else (args,)),
        kwargs=_plain(problems.take(entry, "kwargs", _kwargs, dict[str, Any](), key)),
        queue=problems.take(entry, "queue", _queue, None, key),
        priority=problems.take(entry, "priority", _priority, None, key),
        description=problems.take(entry, "description", _text, None, key),
        missed=missed,
        catch_up_limit=problems.take(entry, "catch_up_limit", _limit, DEFAULT_CATCH_UP_LIMIT, key),
    )
    if len(problems) > before:
        return None
    try:
        _check_args(task)
    except ValueError as exc:
        name = "args" if "args" in entry else "kwargs"
        problems.add(str(exc), line=line_of(entry, name), where=f"{key}.{name}")
        return None
    return task


def dynamic_task(
    key: str,
    schedule: str | Schedule,
    job_or_class: type[Job] | JobFunction[Any, Any] | Callable[..., Any] | str,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    queue: str | None = None,
    priority: int | None = None,
    description: str | None = None,
    missed: MissedPolicy = "skip",
    catch_up_limit: int = DEFAULT_CATCH_UP_LIMIT,
) -> RecurringTask:
    """A dynamic task (:func:`pgjobs.schedule_recurring`), validated like a task of the file;
    ConfigurationError naming the key for anything invalid."""
    class_name = command = None
    if isinstance(job_or_class, JobFunction):
        class_name = job_or_class.job_class.job_name
    elif isinstance(job_or_class, type) and issubclass(job_or_class, Job):
        class_name = job_or_class.job_name
    elif isinstance(job_or_class, str):
        class_name = job_or_class
    else:
        command = f"{job_or_class.__module__}:{job_or_class.__qualname__}"
    try:
        task = RecurringTask(
            key=_text(key),
            schedule=_schedule(schedule),
            class_name=class_name and _class(class_name),
            command=command and _command(command),
            args=tuple(args),
            kwargs=dict(kwargs or {}),
            queue=None if queue is None else _queue(queue),
            priority=None if priority is None else _priority(priority),
            description=description,
            missed=_missed(missed),
            catch_up_limit=_limit(catch_up_limit),
            static=False,
        )
        _check_args(task)
    except ValueError as exc:
        raise ConfigurationError(f"recurring task {key!r}: {exc}") from None
    return task
