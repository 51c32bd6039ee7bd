"""dramatiq with its RedisBroker.

- broker: ``RedisBroker(url=...)`` on the benchmark's redis-server
  (:mod:`benchmarks.redis_server`), dramatiq's default middleware (AgeLimit, TimeLimit,
  ShutdownNotifications, Callbacks, Pipelines, Retries; no Results backend), queue ``default``;
- enqueue: ``noop.send(i)`` (one Lua ``dispatch`` call per message: HSET of the message and
  RPUSH of its id); bulk: dramatiq has no batch enqueue, its docs send many messages with
  ``group(noop.message(i) for i in batch).run()``, which enqueues them one by one;
- workers: the ``dramatiq benchmarks.systems.dramatiq_ --processes P --threads T`` command (its
  main process forks P worker processes of T threads; its defaults are P = CPUs, T = 8; each
  worker prefetches 2 x T messages; an idle consumer polls with a backoff up to
  ``--worker-timeout``, 1 s by default), stopped with SIGTERM;
- counting: dramatiq keeps a message in the ``dramatiq:default.msgs`` hash until it is acked
  (after the actor ran; a failure moves it to ``default.XQ``), and its id in the
  ``dramatiq:default`` list until a worker fetches it: taken = enqueued - list length, done =
  enqueued - hash length.  No counter is added to the job.
- the actor is a plain ``def`` (dramatiq's native kind: its workers are threads).

The worker processes import this module: the broker reads ``BENCH_DATABASE_URL``.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from benchmarks import probe
from benchmarks.common import CHECK_EVERY, WARMUP, Stopwatch, Timed, WorkerSetup, paced, spawn
from benchmarks.redis_server import RedisSystem

QUEUE = "default"
NAMESPACE = "dramatiq"


def _noop(i: int, sent_at: float | None = None) -> None:
    if sent_at is not None:
        probe.record(i)


def make_actor(url: str) -> Any:
    """The ``noop`` actor, declared on a broker of its own for ``url``."""
    return dramatiq.actor(_noop, actor_name="noop", queue_name=QUEUE, broker=RedisBroker(url=url))


# The workers' broker and actor: ``dramatiq`` uses the global broker set at import.
broker = RedisBroker(url=os.environ.get("BENCH_DATABASE_URL") or "redis://127.0.0.1:6379/0")
dramatiq.set_broker(broker)
noop = dramatiq.actor(_noop, actor_name="noop", queue_name=QUEUE)


def _with_actor(url: str, body: Callable[[Any], Any]) -> Any:
    actor = make_actor(url)
    try:
        for i in range(-WARMUP, 0):
            actor.send(i)
        return body(actor)
    finally:
        actor.broker.close()


class DramatiqSystem(RedisSystem):
    name = "dramatiq"
    packages = ("dramatiq", "redis")
    queue_keys = (f"{NAMESPACE}:{QUEUE}",)

    def completed(self, client: redis.Redis, total: int) -> int:
        return total - int(client.hlen(f"{NAMESPACE}:{QUEUE}.msgs"))

    def succeeded(self, client: redis.Redis, total: int) -> int:
        dead = int(client.zcard(f"{NAMESPACE}:{QUEUE}.XQ"))
        return self.completed(client, total) - dead

    def enqueue_single(self, url: str, n: int, limit: float = math.inf) -> Timed:
        def body(actor: Any) -> Timed:
            clock = Stopwatch(limit)
            for i in range(n):
                actor.send(i)
                if i % CHECK_EVERY == 0 and clock.expired():
                    return clock.result(i + 1)
            return clock.result(n)

        result: Timed = _with_actor(url, body)
        return result

    def enqueue_bulk(self, url: str, n: int, batch: int, limit: float = math.inf) -> Timed:
        def body(actor: Any) -> Timed:
            clock = Stopwatch(limit)
            for first in range(0, n, batch):
                last = min(n, first + batch)
                dramatiq.group(
                    (actor.message(i) for i in range(first, last)), broker=actor.broker
                ).run()
                if clock.expired():
                    return clock.result(last)
            return clock.result(n)

        result: Timed = _with_actor(url, body)
        return result

    def enqueue_paced(self, url: str, ids: Sequence[int], rate: float) -> list[tuple[float, float]]:
        def body(actor: Any) -> list[tuple[float, float]]:
            return paced(ids, rate, actor.send)

        result: list[tuple[float, float]] = _with_actor(url, body)
        return result

    def drain_setups(self) -> list[WorkerSetup]:
        return [
            WorkerSetup(2, {"threads": 8}),  # its defaults on 2 cores
            WorkerSetup(1, {"threads": 8}),
            WorkerSetup(2, {"threads": 1}),
            WorkerSetup(2, {"threads": 32}),
        ]

    def latency_setup(self) -> WorkerSetup:
        return WorkerSetup(1, {"threads": 8})

    def start(
        self, url: str, setup: WorkerSetup, workdir: Path, env: dict[str, str]
    ) -> list[subprocess.Popen[bytes]]:
        threads = str(setup.settings.get("threads", 8))
        args = [
            sys.executable,
            "-m",
            "dramatiq",
            "benchmarks.systems.dramatiq_",
            "--processes",
            str(setup.processes),
            "--threads",
            threads,
        ]
        return [spawn(args, workdir, "dramatiq.log", env)]

    def describe(self) -> dict[str, Any]:
        return {
            "job": "def noop(i) (dramatiq actor), default middleware, no Results backend",
            "broker": "RedisBroker, queue 'default', prefetch 2 x threads per worker process",
            "single enqueue": "noop.send(i) (one Lua dispatch call per job)",
            "bulk enqueue": "dramatiq.group(noop.message(i) ...).run() per batch (no batch "
            "enqueue in dramatiq: one call per job)",
            "workers": "dramatiq benchmarks.systems.dramatiq_ --processes P --threads T "
            "(one command; processes = P)",
            "drain counted from": "the queue list and the messages hash (done = every message "
            "acked, after its actor ran)",
        }
