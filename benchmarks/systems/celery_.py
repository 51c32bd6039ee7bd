"""Celery with its Redis broker (kombu's Redis transport), no result backend.

- broker: the benchmark's redis-server (:mod:`benchmarks.redis_server`), Celery's defaults
  otherwise: the default queue ``celery``, ``acks_late`` off (a message is acknowledged as a
  pool worker starts the task), prefetch multiplier 4, ``visibility_timeout`` 1 h;
  ``task_ignore_result`` (no result backend is configured: nothing is written per finished job);
- enqueue: ``noop.delay(i)``, one LPUSH per call through Celery's producer pool; bulk:
  Celery has no bulk publish of its own, its canvas' ``group(noop.s(i) for i in batch)``
  is how its docs send many tasks at once: ``group.apply_async(producer=p)`` inside kombu's
  ``with p.batch():`` (kombu 5.7's producer-scoped batch: its Redis transport sends the
  batch's LPUSHes in one pipeline).  Without the batch a group is one round trip per task;
- workers: ``celery -A benchmarks.systems.celery_ worker --pool P --concurrency C`` (a
  *process* in a :class:`WorkerSetup` is one such worker node; with ``prefork`` each node
  forks C children, with ``threads`` it runs C threads), log level WARNING (its default:
  nothing per task), gossip, mingle and heartbeats as by default, stopped with SIGTERM (warm
  shutdown);
- counting: the drain monitor reads the broker's own keys — the queue's lists and kombu's
  ``unacked`` hash (messages delivered to a worker, not yet acknowledged): taken = enqueued -
  waiting, done = enqueued - waiting - unacked.  With acks on start, "done" is "every task
  started": a no-op's run after its acknowledgement is a few microseconds.  No counter is
  added to the job.
- the task is a plain ``def`` (Celery's native kind).

The worker processes import this module: :data:`app` reads ``BENCH_DATABASE_URL``.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis
from celery import Celery, group

from benchmarks import probe
from benchmarks.common import CHECK_EVERY, WARMUP, Stopwatch, Timed, WorkerSetup, paced, spawn
from benchmarks.redis_server import RedisSystem

QUEUE = "celery"  # Celery's default queue
# kombu's Redis transport: one list per priority step (no priority given: the first).
PRIORITY_SEP = "\x06\x16"
QUEUE_KEYS = (QUEUE, *(f"{QUEUE}{PRIORITY_SEP}{p}" for p in (3, 6, 9)))
UNACKED = "unacked"


def noop(i: int, sent_at: float | None = None) -> None:
    if sent_at is not None:
        probe.record(i)


def make_app(url: str) -> Celery:
    celery_app = Celery("bench", broker=url, set_as_current=False)
    celery_app.conf.update(
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
    )
    celery_app.task(name="noop")(noop)
    return celery_app


app = make_app(os.environ.get("BENCH_DATABASE_URL") or "redis://127.0.0.1:6379/0")


def _with_task(url: str, body: Callable[[Celery, Any], Any]) -> Any:
    bench_app = make_app(url)
    try:
        task = bench_app.tasks["noop"]
        for i in range(-WARMUP, 0):
            task.delay(i)
        return body(bench_app, task)
    finally:
        bench_app.close()


class CelerySystem(RedisSystem):
    name = "celery"
    packages = ("celery", "kombu", "redis")
    queue_keys = QUEUE_KEYS

    def completed(self, client: redis.Redis, total: int) -> int:
        return total - self.waiting(client) - int(client.hlen(UNACKED))

    def enqueue_single(self, url: str, n: int, limit: float = math.inf) -> Timed:
        def body(_app: Celery, task: Any) -> Timed:
            clock = Stopwatch(limit)
            for i in range(n):
                task.delay(i)
                if i % CHECK_EVERY == 0 and clock.expired():
                    return clock.result(i + 1)
            return clock.result(n)

        result: Timed = _with_task(url, body)
        return result

    def enqueue_bulk(self, url: str, n: int, batch: int, limit: float = math.inf) -> Timed:
        def body(bench_app: Celery, task: Any) -> Timed:
            clock = Stopwatch(limit)
            with bench_app.producer_or_acquire() as producer:
                for first in range(0, n, batch):
                    last = min(n, first + batch)
                    with producer.batch(max_size=batch):
                        group(task.s(i) for i in range(first, last)).apply_async(producer=producer)
                    if clock.expired():
                        return clock.result(last)
            return clock.result(n)

        result: Timed = _with_task(url, body)
        return result

    def enqueue_paced(self, url: str, ids: Sequence[int], rate: float) -> list[tuple[float, float]]:
        def body(_app: Celery, task: Any) -> list[tuple[float, float]]:
            return paced(ids, rate, task.delay)

        result: list[tuple[float, float]] = _with_task(url, body)
        return result

    def drain_setups(self) -> list[WorkerSetup]:
        return [
            WorkerSetup(1, {"pool": "prefork", "concurrency": 2}),  # its default on 2 cores
            WorkerSetup(1, {"pool": "prefork", "concurrency": 4}),
            WorkerSetup(2, {"pool": "prefork", "concurrency": 1}),
            WorkerSetup(2, {"pool": "threads", "concurrency": 10}),
            WorkerSetup(2, {"pool": "threads", "concurrency": 50}),
        ]

    def quick_drain_setups(self) -> list[WorkerSetup]:
        # Its default (prefork, one child per core) and the threads pool like pgjobs' 2 x N.
        setups = self.drain_setups()
        return [setups[0], setups[-1]]

    def latency_setup(self) -> WorkerSetup:
        return WorkerSetup(1, {"pool": "prefork", "concurrency": 2})

    def start(
        self, url: str, setup: WorkerSetup, workdir: Path, env: dict[str, str]
    ) -> list[subprocess.Popen[bytes]]:
        pool = str(setup.settings.get("pool", "prefork"))
        concurrency = str(setup.settings.get("concurrency", 2))
        return [
            spawn(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "benchmarks.systems.celery_",
                    "worker",
                    "--pool",
                    pool,
                    "--concurrency",
                    concurrency,
                    "--loglevel",
                    "WARNING",
                    "--hostname",
                    f"bench{k}@%h",
                ],
                workdir,
                f"celery-{k}.log",
                env,
            )
            for k in range(setup.processes)
        ]

    def describe(self) -> dict[str, Any]:
        return {
            "job": "def noop(i) (Celery task), task_ignore_result, no result backend",
            "broker": "Redis (kombu's transport), queue 'celery', acks on start (its default), "
            "prefetch multiplier 4",
            "single enqueue": "noop.delay(i), Celery's producer pool (one LPUSH per job)",
            "bulk enqueue": "group(noop.s(i) ...).apply_async(producer=p) inside kombu's "
            "p.batch() (one Redis pipeline per batch)",
            "workers": "celery worker --pool P --concurrency C (processes = worker nodes), "
            "--loglevel WARNING",
            "drain counted from": "the queue lists and kombu's unacked hash (done = every task "
            "acknowledged, i.e. started)",
        }
