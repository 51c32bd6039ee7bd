"""Concurrency limits and unique jobs: what a job class declares, and the keys it is stored with.

Both are enforced by the database (see ``docs/concurrency.md``):

- **Concurrency limits** (``limits_concurrency = pgjobs.limit(to=2, key=...)``): a job takes a
  slot of its ``group/key`` semaphore (``pgjobs_semaphores``: how many jobs hold one) when it
  becomes ready — at enqueue, or when a scheduled job is due — and gives it back when its
  execution ends (finished, failed, discarded, or retried later).  With no free slot the job
  waits in ``pgjobs_blocked_executions`` (``on_conflict="block"``) or is finished as discarded
  (``"discard"``).  Slot changes and blocking lock the semaphore row, so a release never misses
  a job blocked concurrently.  A slot whose holder died comes back ``duration`` after the
  semaphore was last taken (the dispatcher's concurrency maintenance).
- **Unique jobs** (``unique = pgjobs.unique(key=...)``): the job's ``unique_key`` column has a
  partial unique index; enqueue is ``INSERT ... ON CONFLICT DO NOTHING``, so of two racing
  enqueues exactly one writes.  The key is released (set to NULL) when the job leaves the
  declared state: at claim (``until="executing"``), or when its execution ends for good
  (``until="executed"``: finished, failed, discarded, failed after interruptions).  With
  ``period`` the key names a time window and is never released: one job per key per window.

- **Ordered keys** (``ordered = pgjobs.ordered(key=...)``): a concurrency limit of one per key
  whose blocked jobs leave in enqueue order (their blocked rows carry priority 0, so the
  ``(priority, job_id)`` order is the id order), whose semaphore never expires, and whose job keeps
  the slot through a retry and, unless ``on_failure="continue"``, through a failure for good (until
  it is retried or discarded): the next job of the key waits for it.  Stored as a concurrency
  limit with ``concurrency_on_conflict`` ``"ordered"`` or ``"ordered_continue"``.
- **Rate limits** (``rate_limit = pgjobs.rate_limit(limit=10, period=1, key=...)``): at most
  ``limit`` jobs of a key *start* in any ``period``, checked by the worker that claimed them
  (:mod:`pgjobs.store.rates`); a job over the budget waits in line and runs as it frees.

Stored key formats: ``concurrency_key = "<group>/<key>"`` (group defaults to the job name) and
``unique_key = "<mode>|<job name>|<key>"`` where mode is ``x`` (until executing), ``d`` (until
executed) or ``p`` (a period; the key ends with ``@<window start>/<window end>``, an ISO 8601
interval: the window's end tells retention how long the job row must stay, see
:data:`pgjobs.store.jobs.PERIOD_ENDED`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from pgjobs.errors import ConfigurationError

if TYPE_CHECKING:
    from pgjobs.jobs.base import Job

OnLimit = Literal["block", "discard"]
Until = Literal["executing", "executed"]
OnDuplicate = Literal["skip", "raise", "replace"]
KeyFunction = Callable[..., Any]

DEFAULT_DURATION = timedelta(minutes=3)  # Solid Queue's default concurrency_duration
OnFailure = Literal["hold", "continue"]
ORDERED, ORDERED_CONTINUE = "ordered", "ordered_continue"  # concurrency_on_conflict values
UNTIL_EXECUTING, UNTIL_EXECUTED, PERIOD = "x", "d", "p"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ConcurrencyLimit:
    """``limits_concurrency``: at most ``to`` jobs with the same group/key hold a slot at once."""

    to: int
    key: KeyFunction | None
    duration: timedelta
    group: str | None
    on_conflict: OnLimit


@dataclass(frozen=True)
class Uniqueness:
    """``unique``: at most one job with the same key waiting (or running, until it executed)."""

    key: KeyFunction | None
    until: Until
    on_conflict: OnDuplicate
    period: timedelta | None


@dataclass(frozen=True)
class Ordered:
    """``ordered``: jobs with the same key run one at a time, in enqueue order."""

    key: KeyFunction | None
    group: str | None
    on_failure: OnFailure


@dataclass(frozen=True)
class RateLimit:
    """``rate_limit``: at most ``limit`` jobs with the same key start in any ``period``."""

    limit: int
    period: timedelta
    key: KeyFunction | None
    group: str | None


def _duration(value: float | timedelta, what: str) -> timedelta:
    delta = value if isinstance(value, timedelta) else None
    if delta is None and isinstance(value, int | float) and not isinstance(value, bool):
        delta = timedelta(seconds=value)
    if delta is None or delta <= timedelta(0):
        raise ConfigurationError(f"{what} must be a positive timedelta or seconds, got {value!r}")
    return delta


def _choice(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise ConfigurationError(f"{what} must be one of {', '.join(allowed)}; got {value!r}")


def _key_function(key: KeyFunction | None, what: str) -> KeyFunction | None:
    if key is not None and not callable(key):
        raise ConfigurationError(f"{what} must be a callable taking the job's arguments")
    return key


def limit(
    *,
    to: int = 1,
    key: KeyFunction | None = None,
    duration: float | timedelta = DEFAULT_DURATION,
    group: str | None = None,
    on_conflict: OnLimit = "block",
) -> ConcurrencyLimit:
    """A concurrency limit for a job class: ``limits_concurrency = pgjobs.limit(to=2, key=...)``.

    ``key`` is called with the job's ``perform`` arguments; jobs whose keys are equal (as
    strings) share ``to`` slots — across every worker and host.  Without ``key`` the whole class
    (or ``group``) shares them.  ``group`` lets several classes share slots (default: the job
    name).  ``duration`` bounds how long a dead holder keeps a slot.  ``on_conflict``: what a job
    that finds no free slot does — ``"block"`` (wait its turn) or ``"discard"`` (finish unrun).
    """
    if isinstance(to, bool) or not isinstance(to, int) or to < 1:
        raise ConfigurationError(f"limit(to=...) must be a positive int, got {to!r}")
    _choice(on_conflict, ("block", "discard"), "limit(on_conflict=...)")
    return ConcurrencyLimit(
        to=to,
        key=_key_function(key, "limit(key=...)"),
        duration=_duration(duration, "limit(duration=...)"),
        group=_group(group, "limit(group=...)"),
        on_conflict=on_conflict,
    )


def unique(
    *,
    key: KeyFunction | None = None,
    until: Until | None = None,
    on_conflict: OnDuplicate = "skip",
    period: float | timedelta | None = None,
) -> Uniqueness:
    """Uniqueness for a job class: ``unique = pgjobs.unique(key=lambda index: index)``.

    ``key`` is called with the job's ``perform`` arguments (default: all of them).  ``until``:
    ``"executing"`` (one job waiting per key) or ``"executed"`` (one waiting or running; the
    default).  ``period``: one job per key per time window instead (exclusive with ``until``).
    ``on_conflict``: ``"skip"`` (``perform_later`` returns the existing job as ``duplicate_of``),
    ``"raise"`` (:class:`pgjobs.DuplicateJobError`) or ``"replace"`` (the waiting duplicate is
    discarded and the new job takes its place; a running one is kept, as with ``"skip"``).
    """
    if period is not None and until is not None:
        raise ConfigurationError(
            "unique(): give either until= or period=, not both (a period key lasts its window)"
        )
    mode: Until = until or "executed"
    _choice(mode, ("executing", "executed"), "unique(until=...)")
    _choice(on_conflict, ("skip", "raise", "replace"), "unique(on_conflict=...)")
    return Uniqueness(
        key=_key_function(key, "unique(key=...)"),
        until=mode,
        on_conflict=on_conflict,
        period=_duration(period, "unique(period=...)") if period is not None else None,
    )


def _group(group: str | None, what: str) -> str | None:
    if group is not None and (not isinstance(group, str) or not group):
        raise ConfigurationError(f"{what} must be a non-empty string, got {group!r}")
    return group


def ordered(
    *, key: KeyFunction | None = None, group: str | None = None, on_failure: OnFailure = "hold"
) -> Ordered:
    """Ordered keys for a job class: ``ordered = pgjobs.ordered(key=lambda account: account)``.

    Jobs whose keys are equal run one at a time, in the order they were enqueued, across every
    worker and host; jobs of different keys run in parallel.  Without ``key`` the whole class (or
    ``group``, shared by several classes) is one line.  A job that is retried later keeps its
    place (the next job waits for the retry).  ``on_failure``: what a job that failed for good
    does — ``"hold"`` (the default: the key waits until the job is retried or discarded) or
    ``"continue"`` (the next job proceeds).
    """
    _choice(on_failure, ("hold", "continue"), "ordered(on_failure=...)")
    return Ordered(
        key=_key_function(key, "ordered(key=...)"),
        group=_group(group, "ordered(group=...)"),
        on_failure=on_failure,
    )


def rate_limit(
    *,
    limit: int,
    period: float | timedelta = 1.0,
    key: KeyFunction | None = None,
    group: str | None = None,
) -> RateLimit:
    """A rate limit for a job class: ``rate_limit = pgjobs.rate_limit(limit=10, period=1)``.

    At most ``limit`` jobs with the same key **start** in any window of ``period`` (a timedelta
    or seconds), across every worker and host.  Jobs over the budget are not dropped or failed:
    they wait in line, in priority then enqueue order, and run as the budget frees.  ``key`` is
    called with the job's ``perform`` arguments (without it the whole class, or ``group``, shares
    one budget).
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
        raise ConfigurationError(
            f"rate_limit(limit=...) must be an int from 1 to 10000, got {limit!r} (the limit "
            "keeps one timestamp per start in its window: for more, scale both down, e.g. "
            "limit=1000, period=36 for 100000 an hour)"
        )
    return RateLimit(
        limit=limit,
        period=_duration(period, "rate_limit(period=...)"),
        key=_key_function(key, "rate_limit(key=...)"),
        group=_group(group, "rate_limit(group=...)"),
    )


def check_declarations(cls: type[Job]) -> None:
    """Refuse a class whose ``limits_concurrency`` / ``unique`` / ``ordered`` / ``rate_limit``
    is not what these build, or that declares both ``ordered`` and ``limits_concurrency``."""
    for attr, kind, factory in (
        ("limits_concurrency", ConcurrencyLimit, "pgjobs.limit(...)"),
        ("unique", Uniqueness, "pgjobs.unique(...)"),
        ("ordered", Ordered, "pgjobs.ordered(...)"),
        ("rate_limit", RateLimit, "pgjobs.rate_limit(...)"),
    ):
        value = getattr(cls, attr, None)
        if value is not None and not isinstance(value, kind):
            raise ConfigurationError(
                f"{cls.job_name}: {attr} must be {factory} or None, got {value!r}"
            )
    if getattr(cls, "ordered", None) is not None and getattr(cls, "limits_concurrency", None):
        raise ConfigurationError(
            f"{cls.job_name}: declares both ordered and limits_concurrency; an ordered key is "
            "already a limit of one job per key — keep one of them"
        )


def _key_text(job: Job, key: KeyFunction | None, what: str) -> str:
    if key is None:
        from pgjobs.serialization import dumps_arguments

        return dumps_arguments(job.args, job.kwargs, context=f"{type(job).job_name} {what}")
    try:
        value = key(*job.args, **job.kwargs)
    except Exception as exc:
        raise ConfigurationError(
            f"{type(job).job_name}: its {what} key function failed on the job's arguments: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


@dataclass(frozen=True)
class Keys:
    """The concurrency and uniqueness columns of one job about to be written."""

    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    concurrency_duration: timedelta | None = None
    concurrency_on_conflict: str | None = None
    unique_key: str | None = None
    on_duplicate: OnDuplicate = "skip"
    rate_key: str | None = None
    rate_limit: int | None = None
    rate_period: timedelta | None = None

    @property
    def special(self) -> bool:
        return (
            self.concurrency_key is not None
            or self.unique_key is not None
            or self.rate_key is not None
        )


NO_KEYS = Keys()


def keys_for(job: Job, now: datetime) -> Keys:
    """The keys ``job`` is stored with (``NO_KEYS`` for a job with neither declaration)."""
    cls = type(job)
    limits: ConcurrencyLimit | None = getattr(cls, "limits_concurrency", None)
    uniqueness: Uniqueness | None = getattr(cls, "unique", None)
    order: Ordered | None = getattr(cls, "ordered", None)
    rate: RateLimit | None = getattr(cls, "rate_limit", None)
    if limits is None and uniqueness is None and order is None and rate is None:
        return NO_KEYS
    values: dict[str, Any] = {}
    if order is not None:
        suffix = "" if order.key is None else "/" + _key_text(job, order.key, "ordered")
        values.update(
            concurrency_key=(order.group or cls.job_name) + suffix,
            concurrency_limit=1,
            # How long a blocked job waits before maintenance checks its key for a missed
            # release; the key's semaphore itself never expires (see store.semaphores).
            concurrency_duration=DEFAULT_DURATION,
            concurrency_on_conflict=ORDERED if order.on_failure == "hold" else ORDERED_CONTINUE,
        )
    if rate is not None:
        suffix = "" if rate.key is None else "/" + _key_text(job, rate.key, "rate limit")
        values.update(
            rate_key=(rate.group or cls.job_name) + suffix,
            rate_limit=rate.limit,
            rate_period=rate.period,
        )
    if limits is not None:
        group = limits.group or cls.job_name
        suffix = "" if limits.key is None else "/" + _key_text(job, limits.key, "concurrency")
        values.update(
            concurrency_key=group + suffix,
            concurrency_limit=limits.to,
            concurrency_duration=limits.duration,
            concurrency_on_conflict=limits.on_conflict,
        )
    if uniqueness is not None:
        key = _key_text(job, uniqueness.key, "unique")
        if uniqueness.period is not None:
            seconds = uniqueness.period.total_seconds()
            window = int((now - _EPOCH).total_seconds() // seconds) * seconds
            start = (_EPOCH + timedelta(seconds=window)).isoformat()
            end = (_EPOCH + timedelta(seconds=window + seconds)).isoformat()
            unique_key = f"{PERIOD}|{cls.job_name}|{key}@{start}/{end}"
        else:
            mode = UNTIL_EXECUTING if uniqueness.until == "executing" else UNTIL_EXECUTED
            unique_key = f"{mode}|{cls.job_name}|{key}"
        values.update(unique_key=unique_key, on_duplicate=uniqueness.on_conflict)
    return Keys(**values)
