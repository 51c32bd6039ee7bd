"""Running one claimed job: resolve its class, decode its arguments, perform it.

Anything that goes wrong — an unknown class, undecodable arguments, an exception in ``perform``
— becomes the job's failure (an :class:`Outcome` with the error), never a worker crash.  Async
jobs run on the worker's event loop thread; the calling worker thread waits for them, so the
``threads`` setting bounds sync and async jobs alike.
"""

from __future__ import annotations

import asyncio
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from pgjobs.jobs import resolve
from pgjobs.serialization import deserialize_arguments


@dataclass(frozen=True, slots=True)
class Claimed:
    """A job as the claim statement returns it."""

    id: int
    job_id: UUID
    class_name: str
    arguments: Any
    queue_name: str
    priority: int
    executions: int
    created_at: datetime
    scheduled_at: datetime | None


@dataclass(frozen=True, slots=True)
class Outcome:
    claimed: Claimed
    error: BaseException | None = None
    backtrace: str = ""
    duration: float = 0.0


class EventLoopThread:
    """One asyncio loop in a daemon thread, started on first use, for async jobs."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(
                    target=loop.run_forever, name="pgjobs-asyncio", daemon=True
                ).start()
                self._loop = loop
            return self._loop

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)


def perform(claimed: Claimed, loop: EventLoopThread) -> Outcome:
    started = time.perf_counter()
    try:
        job_class = resolve(claimed.class_name)
        args, kwargs = deserialize_arguments(claimed.arguments)
        job = job_class.restore(
            job_id=claimed.job_id,
            args=args,
            kwargs=kwargs,
            queue_name=claimed.queue_name,
            priority=claimed.priority,
            executions=claimed.executions + 1,
            enqueued_at=claimed.created_at,
            scheduled_at=claimed.scheduled_at,
        )
        if job_class.is_async():
            asyncio.run_coroutine_threadsafe(job.perform_inline_async(), loop.loop).result()
        else:
            job.perform_inline()
    except Exception as exc:
        return Outcome(claimed, exc, traceback.format_exc(), time.perf_counter() - started)
    return Outcome(claimed, None, "", time.perf_counter() - started)
