"""Enqueue and perform callbacks, ActiveJob style, inherited along the class hierarchy.

Mark methods of a :class:`pgjobs.Job` subclass::

    class Audited(pgjobs.Job):
        @pgjobs.before_perform
        def log_start(self) -> None: ...

        @pgjobs.around_perform
        def timed(self, proceed):
            started = time.monotonic()
            proceed()
            ...

Order (as in ActiveJob): ``before_*`` and ``around_*`` run from the base class down to the
subclass, in definition order; ``after_*`` run in the reverse order.  An ``around_*`` callback
receives ``proceed`` and must call it exactly once (not calling it skips the job and every inner
callback).  For ``async def perform`` jobs, before/after callbacks may be ``def`` or
``async def``; around callbacks must be ``async def`` and ``await proceed()`` (a job class that
breaks this rule is refused when it is defined).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

from pgjobs.errors import ConfigurationError

Phase = Literal["enqueue", "perform"]
Kind = Literal["before", "after", "around"]
F = TypeVar("F", bound=Callable[..., Any])
_ATTR = "__pgjobs_callback__"


def _marker(kind: Kind, phase: Phase) -> Callable[[F], F]:
    def mark(fn: F) -> F:
        setattr(fn, _ATTR, (kind, phase))
        return fn

    mark.__name__ = f"{kind}_{phase}"
    return mark


before_enqueue = _marker("before", "enqueue")
after_enqueue = _marker("after", "enqueue")
around_enqueue = _marker("around", "enqueue")
before_perform = _marker("before", "perform")
after_perform = _marker("after", "perform")
around_perform = _marker("around", "perform")


def collect(cls: type) -> dict[tuple[Kind, Phase], tuple[str, ...]]:
    """The callback method names of ``cls`` by (kind, phase), base classes first."""
    found: dict[tuple[Kind, Phase], list[str]] = {}
    seen: set[str] = set()
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            marker = getattr(value, _ATTR, None)
            if marker is None or name in seen:
                continue
            seen.add(name)
            found.setdefault(marker, []).append(name)
    return {key: tuple(names) for key, names in found.items()}


def _sync_call(obj: object, name: str, *args: Any) -> Any:
    result = getattr(obj, name)(*args)
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()
        raise ConfigurationError(
            f"{type(obj).__qualname__}.{name} is an async callback: it runs only with "
            "perform_later_async() / async def perform, not from synchronous code"
        )
    return result


def run(obj: object, phase: Phase, body: Callable[[], Any]) -> Any:
    """Run ``body`` wrapped in ``obj``'s callbacks for ``phase`` (synchronous)."""
    table: dict[tuple[Kind, Phase], tuple[str, ...]] = obj._callbacks  # type: ignore[attr-defined]
    around = table.get(("around", phase))
    if not around and not table.get(("before", phase)) and not table.get(("after", phase)):
        return body()  # none: the common case of every enqueue
    for name in table.get(("before", phase), ()):
        _sync_call(obj, name)
    result: list[Any] = []

    def innermost() -> None:
        result.append(body())

    call = innermost
    for name in reversed(around or ()):
        call = _wrap(obj, name, call)
    call()
    for name in reversed(table.get(("after", phase), ())):
        _sync_call(obj, name)
    return result[0] if result else None


def _wrap(obj: object, name: str, inner: Callable[[], Any]) -> Callable[[], Any]:
    return lambda: _sync_call(obj, name, inner)


async def run_async(obj: object, phase: Phase, body: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``body`` wrapped in ``obj``'s callbacks; any callback may be ``async def``."""
    table: dict[tuple[Kind, Phase], tuple[str, ...]] = obj._callbacks  # type: ignore[attr-defined]
    for name in table.get(("before", phase), ()):
        await _maybe_await(getattr(obj, name)())
    result: list[Any] = []

    async def innermost() -> None:
        result.append(await body())

    call: Callable[[], Awaitable[None]] = innermost
    for name in reversed(table.get(("around", phase), ())):
        call = _wrap_async(getattr(obj, name), call)
    await call()
    for name in reversed(table.get(("after", phase), ())):
        await _maybe_await(getattr(obj, name)())
    return result[0] if result else None


def _wrap_async(
    around: Callable[[Callable[[], Awaitable[None]]], Any], inner: Callable[[], Awaitable[None]]
) -> Callable[[], Awaitable[None]]:
    async def call() -> None:
        await _maybe_await(around(inner))

    return call


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value
