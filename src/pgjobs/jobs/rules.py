"""What happens when a job raises: ``retry_on``, ``discard_on`` and ``@rescue_from``.

Rules are declared on a job class and inherited::

    class ProcessPayment(pgjobs.Job):
        retry_on = [pgjobs.retry_on(GatewayError, wait="polynomially_longer", attempts=5)]
        discard_on = [InvalidCard]

        @pgjobs.rescue_from(ValueError)
        def handle(self, error: ValueError) -> None: ...

When ``perform`` raises, the rule that applies is the one naming the **most specific** class of
the error (the class nearest the error's own class in its MRO).  Ties go to the rule of the
subclass over its base class, then ``rescue_from`` over ``discard_on`` over ``retry_on``, then
to the earlier rule in its list.  A conditional discard whose ``if_`` is false does not apply.
An error no rule names fails the job.  ``docs/errors.md`` is the user's guide.

:func:`decide` (and :func:`decide_async`, for async jobs, which may use ``async def`` handlers)
runs the winning rule — the user's handler, ``after_discard``, ``on_exhausted`` — and returns a
:class:`Decision` the worker records in one statement.
"""

from __future__ import annotations

import inspect
import random
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypeVar

from pgjobs.errors import ConfigurationError

if TYPE_CHECKING:
    from pgjobs.jobs.base import Job

ErrorClasses: TypeAlias = "type[BaseException] | tuple[type[BaseException], ...]"
Kind = Literal["finished", "retry", "discard", "fail"]
F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_WAIT = 3.0  # seconds, ActiveJob's default
DEFAULT_ATTEMPTS = 5
DEFAULT_JITTER = 0.15
_RESCUE_ATTR = "__pgjobs_rescue_from__"
_ALGORITHMS = ("exponentially_longer", "polynomially_longer")

#: Where the jitter's randomness comes from (replace it in tests for a deterministic schedule).
rand: Callable[[], float] = random.random


# -- declaring rules ----------------------------------------------------------------------------


def _error_classes(errors: Iterable[Any], what: str) -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = []
    for error in errors:
        if isinstance(error, tuple):
            found.extend(_error_classes(error, what))
        elif isinstance(error, type) and issubclass(error, BaseException):
            found.append(error)
        else:
            raise ConfigurationError(f"{what}: {error!r} is not an exception class")
    if not found:
        raise ConfigurationError(f"{what}: name at least one exception class")
    return tuple(found)


def _seconds(value: float | timedelta, what: str) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise ConfigurationError(f"{what}: a wait must be seconds >= 0 or a timedelta")
    return float(seconds)


@dataclass(frozen=True)
class RetryRule:
    """Made by :func:`retry_on`: retry the job on ``errors`` until ``attempts`` executions."""

    errors: tuple[type[BaseException], ...]
    # seconds, a timedelta, "polynomially_longer" / "exponentially_longer", or a callable
    # ``(executions) -> seconds | timedelta``
    wait: Any = DEFAULT_WAIT
    attempts: int | Literal["unlimited"] = DEFAULT_ATTEMPTS
    jitter: float = DEFAULT_JITTER
    queue: str | None = None
    priority: int | None = None
    on_exhausted: Callable[[Any, BaseException], Any] | None = None

    kind = "retry"

    def delay(self, executions: int, rand_: Callable[[], float] | None = None) -> float:
        """Seconds to wait before the retry that follows execution number ``executions`` (1-based).

        ActiveJob's schedules: ``"polynomially_longer"`` is ``executions**4 + 2`` plus a jitter
        of up to ``executions**4 * jitter``; ``"exponentially_longer"`` is ActiveJob's older name
        for the very same formula (3 s, 18 s, 83 s, 258 s, 627 s …).  A number or timedelta
        waits that long plus up to ``wait * jitter``; a callable gets ``executions`` and returns
        the wait (no jitter is added).
        """
        draw = rand_ or rand
        wait = self.wait
        if isinstance(wait, str):
            base = float(executions**4)
            return base + (draw() * base * self.jitter if self.jitter else 0.0) + 2.0
        if callable(wait):
            return _seconds(wait(executions), f"retry_on({self._names()}) wait callable")
        seconds = _seconds(wait, f"retry_on({self._names()})")
        return seconds + (draw() * seconds * self.jitter if self.jitter else 0.0)

    def exhausted(self, executions: int) -> bool:
        return self.attempts != "unlimited" and executions >= self.attempts

    def _names(self) -> str:
        return ", ".join(e.__name__ for e in self.errors)


@dataclass(frozen=True)
class DiscardRule:
    """Made by :func:`discard_on`: finish the job as discarded on ``errors`` (when ``if_``)."""

    errors: tuple[type[BaseException], ...]
    if_: Callable[[Any, BaseException], object] | None = None

    kind = "discard"


@dataclass(frozen=True)
class RescueRule:
    """A method marked with :func:`rescue_from`, handling ``errors`` itself."""

    errors: tuple[type[BaseException], ...]
    method: str

    kind = "rescue"


Rule: TypeAlias = "RetryRule | DiscardRule | RescueRule"


def retry_on(
    *errors: ErrorClasses,
    wait: Any = DEFAULT_WAIT,
    attempts: int | Literal["unlimited"] = DEFAULT_ATTEMPTS,
    jitter: float = DEFAULT_JITTER,
    queue: str | None = None,
    priority: int | None = None,
    on_exhausted: Callable[[Any, BaseException], Any] | None = None,
) -> RetryRule:
    """Retry the job when it raises one of ``errors``, for an item of a job's ``retry_on`` list.

    The retry is the same job (same ``job_id``, ``executions`` counted) rescheduled ``wait``
    later — seconds, a timedelta, ``"polynomially_longer"`` / ``"exponentially_longer"``, or a
    callable of the execution number — on ``queue`` / with ``priority`` if given.  ``attempts``
    bounds the job's executions (``"unlimited"``: never give up).  Once they are used up the job
    fails, unless ``on_exhausted(job, error)`` is given: it runs instead, and the job is then
    discarded (or fails with what it raises).
    """
    what = f"retry_on({', '.join(getattr(e, '__name__', repr(e)) for e in errors)})"
    classes = _error_classes(errors, what)
    if isinstance(wait, str) and wait not in _ALGORITHMS:
        choices = ", ".join(map(repr, _ALGORITHMS))
        message = f"wait must be seconds, a timedelta, a callable or one of {choices}"
        raise ConfigurationError(f"{what}: {message}, got {wait!r}")
    if not isinstance(wait, str) and not callable(wait):
        _seconds(wait, what)
    if attempts != "unlimited" and (
        isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1
    ):
        raise ConfigurationError(f"{what}: attempts must be a positive int or 'unlimited'")
    if isinstance(jitter, bool) or not isinstance(jitter, int | float) or jitter < 0:
        raise ConfigurationError(f"{what}: jitter must be a number >= 0, got {jitter!r}")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise ConfigurationError(f"{what}: priority must be an int, got {priority!r}")
    if queue is not None and (not isinstance(queue, str) or not queue):
        raise ConfigurationError(f"{what}: queue must be a non-empty string, got {queue!r}")
    return RetryRule(classes, wait, attempts, float(jitter), queue, priority, on_exhausted)


def discard_on(
    *errors: ErrorClasses, if_: Callable[[Any, BaseException], object] | None = None
) -> DiscardRule:
    """Discard the job when it raises one of ``errors`` (and ``if_(job, error)`` is true).

    A discarded job is finished, with ``discarded_at`` set and the error kept in its history;
    its ``after_discard`` hooks run.  A bare exception class in ``discard_on`` means the same.
    """
    what = f"discard_on({', '.join(getattr(e, '__name__', repr(e)) for e in errors)})"
    return DiscardRule(_error_classes(errors, what), if_)


def rescue_from(*errors: ErrorClasses) -> Callable[[F], F]:
    """Mark a job method as the handler of ``errors``: ``def handle(self, error)``.

    The handler decides: returning normally swallows the error (the job finishes), raising fails
    the job with what it raises (re-raise with ``raise error``), and ``self.retry_job(wait=...)``
    reschedules the job as a retry.  On an async job the handler may be ``async def``.
    """
    classes = _error_classes(errors, "rescue_from()")

    def mark(fn: F) -> F:
        setattr(fn, _RESCUE_ATTR, classes)
        return fn

    return mark


# -- collecting a class's rules -------------------------------------------------------------------


def _as_retry(item: Any, owner: str) -> RetryRule:
    if isinstance(item, RetryRule):
        return item
    if isinstance(item, DiscardRule | RescueRule):
        raise ConfigurationError(f"{owner}.retry_on: {item!r} is not a retry rule")
    return retry_on(item)


def _as_discard(item: Any, owner: str) -> DiscardRule:
    if isinstance(item, DiscardRule):
        return item
    if isinstance(item, RetryRule | RescueRule):
        raise ConfigurationError(f"{owner}.discard_on: {item!r} is not a discard rule")
    return discard_on(item)


def _items(value: Any, owner: str, attr: str) -> Sequence[Any]:
    if value is None:
        return ()
    if isinstance(value, list | tuple):
        return value
    if isinstance(value, RetryRule | DiscardRule | type):
        return (value,)
    raise ConfigurationError(f"{owner}.{attr} must be a list of rules, got {value!r}")


def collect(cls: type) -> tuple[Rule, ...]:
    """The rules of ``cls`` and its bases: subclass first; within a class, rescue_from handlers
    (definition order), then ``discard_on``, then ``retry_on`` (list order)."""
    found: list[Rule] = []
    handlers: set[str] = set()
    owner = getattr(cls, "job_name", "") or cls.__qualname__
    for klass in cls.__mro__:
        own = vars(klass)
        for name, value in own.items():
            errors = getattr(value, _RESCUE_ATTR, None)
            if errors is not None and name not in handlers:
                # An override without the decorator keeps the rule and is what gets called.
                found.append(RescueRule(errors, name))
                handlers.add(name)
        if "discard_on" in own:
            for item in _items(own["discard_on"], owner, "discard_on"):
                found.append(_as_discard(item, owner))
        if "retry_on" in own:
            for item in _items(own["retry_on"], owner, "retry_on"):
                found.append(_as_retry(item, owner))
    return tuple(found)


def candidates(rules: Sequence[Rule], error: BaseException) -> list[Rule]:
    """The rules naming a class of ``error``, the one that applies first (see module docstring)."""
    mro = type(error).__mro__
    ranked: list[tuple[int, int, Rule]] = []
    for position, rule in enumerate(rules):
        distances = [
            mro.index(c) if c in mro else len(mro) for c in rule.errors if isinstance(error, c)
        ]
        if distances:
            ranked.append((min(distances), position, rule))
    ranked.sort(key=lambda entry: (entry[0], entry[1]))
    return [rule for _, _, rule in ranked]


# -- deciding -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    """What to record for a job whose ``perform`` raised."""

    kind: Kind
    error: BaseException | None = None
    wait: float | None = None  # retry: seconds before the job is ready again
    queue: str | None = None  # retry: move to this queue
    priority: int | None = None  # retry: with this priority
    rescued: bool = False  # finished: a rescue_from handler swallowed the error

    @property
    def backtrace(self) -> str:
        if self.error is None:
            return ""
        return "".join(traceback.format_exception(self.error))


@dataclass(frozen=True, slots=True)
class RetryRequest:
    """Set by :meth:`pgjobs.Job.retry_job` inside an error handler."""

    wait: float | timedelta | None
    queue: str | None
    priority: int | None


def _requested(job: Job, error: BaseException) -> Decision | None:
    request: RetryRequest | None = job._retry_request
    if request is None:
        return None
    job._retry_request = None
    wait = 0.0 if request.wait is None else _seconds(request.wait, "retry_job")
    return Decision("retry", error, wait, request.queue, request.priority)


# The configuration's default policy (queue.yml ``retry:``), set by workers at start: it applies
# to an ``Exception`` that none of the job's own rules matches.
default_retry: RetryRule | None = None


def set_default_retry(settings: Mapping[str, Any] | None) -> RetryRule | None:
    """Install the default retry policy from queue.yml's ``retry:`` mapping (None: no retries)."""
    global default_retry
    default_retry = retry_on(Exception, **settings) if settings else None
    return default_retry


def _pick(job: Job, error: BaseException) -> Rule | None:
    for rule in candidates(type(job)._rules, error):
        if isinstance(rule, DiscardRule) and rule.if_ is not None and not rule.if_(job, error):
            continue
        return rule
    if default_retry is not None and isinstance(error, Exception):
        return default_retry
    return None


def _retry(rule: RetryRule, job: Job, error: BaseException) -> Decision:
    return Decision("retry", error, rule.delay(job.executions), rule.queue, rule.priority)


def decide(job: Job, error: BaseException) -> Decision:
    """Apply the job's rules to ``error`` (synchronous handlers); never raises."""
    try:
        rule = _pick(job, error)
        if rule is None:
            return _discarded(job, error, "fail")
        if isinstance(rule, RescueRule):
            _handling(error, getattr(job, rule.method), error)
            return _requested(job, error) or Decision("finished", error, rescued=True)
        if isinstance(rule, DiscardRule):
            return _discarded(job, error, "discard")
        if not rule.exhausted(job.executions):
            return _retry(rule, job, error)
        if rule.on_exhausted is None:
            return _discarded(job, error, "fail")
        _handling(error, rule.on_exhausted, job, error)
        return _requested(job, error) or _discarded(job, error, "discard")
    except Exception as raised:
        return _discarded(job, raised, "fail")


def _handling(error: BaseException, fn: Callable[..., object], *args: Any) -> None:
    """Call a handler while ``error`` is being handled, so that a bare ``raise`` re-raises it."""
    original = error.__traceback__
    try:
        raise error
    except BaseException:
        try:
            fn(*args)
        finally:
            error.__traceback__ = original  # as perform left it, without this frame


async def _handling_async(error: BaseException, fn: Callable[..., object], *args: Any) -> None:
    original = error.__traceback__
    try:
        raise error
    except BaseException:
        try:
            await _maybe_await(fn(*args))
        finally:
            error.__traceback__ = original


def _discarded(job: Job, error: BaseException, kind: Kind) -> Decision:
    """The job ends for good with ``error``: run its after_discard hooks first."""
    try:
        job.after_discard(error)
    except Exception as raised:
        return Decision("fail", raised)
    return Decision(kind, error)


async def _maybe_await(value: object) -> None:
    if inspect.isawaitable(value):
        await value


async def decide_async(job: Job, error: BaseException) -> Decision:
    """:func:`decide` for async jobs: handlers and hooks may be ``async def``."""
    try:
        rule = _pick(job, error)
        if rule is None:
            return await _discarded_async(job, error, "fail")
        if isinstance(rule, RescueRule):
            await _handling_async(error, getattr(job, rule.method), error)
            return _requested(job, error) or Decision("finished", error, rescued=True)
        if isinstance(rule, DiscardRule):
            return await _discarded_async(job, error, "discard")
        if not rule.exhausted(job.executions):
            return _retry(rule, job, error)
        if rule.on_exhausted is None:
            return await _discarded_async(job, error, "fail")
        await _handling_async(error, rule.on_exhausted, job, error)
        return _requested(job, error) or await _discarded_async(job, error, "discard")
    except Exception as raised:
        return await _discarded_async(job, raised, "fail")


async def _discarded_async(job: Job, error: BaseException, kind: Kind) -> Decision:
    try:
        await _maybe_await(job.after_discard(error))
    except Exception as raised:
        return Decision("fail", raised)
    return Decision(kind, error)
