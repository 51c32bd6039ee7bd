"""RQ (Redis Queue).

- queue: ``Queue("default", connection=Redis.from_url(url))`` on the benchmark's redis-server
  (:mod:`benchmarks.redis_server`), RQ's defaults: finished jobs kept for 500 s (their
  result, their entry in the finished registry), no retries;
- enqueue: ``queue.enqueue(noop, i)`` (one MULTI/EXEC pipeline per job: the job's hash, the
  queue's list); bulk: ``queue.enqueue_many([Queue.prepare_data(noop, (i,)) ...])``, RQ's
  bulk API (one pipeline per batch);
- workers: ``rq worker --url URL --worker-class C --config benchmarks.rq_jobs default``, one
  process per :class:`WorkerSetup` process (an RQ worker runs one job at a time: there are no
  threads).  RQ's default ``Worker`` forks a "work horse" process for every job;
  ``SimpleWorker`` runs the job in the worker's own process, which RQ documents as the fast
  way.  The job lives in :mod:`benchmarks.rq_jobs`, which imports next to nothing, and
  ``--config`` makes the worker import it before it forks (RQ's advice for modules every job
  needs): importing this module in every horse would cost ~90 ms per job.  Both are swept;
  ``--no-sweep`` runs both with 2 processes, and the faster is repeated and reported (the
  report names the class).  ``--quiet`` (WARNING): RQ logs three INFO lines per job by
  default, as procrastinate logs two (``BENCH_RQ_LOG_LEVEL=INFO`` measures the default);
- counting: the drain monitor reads RQ's own keys: taken = enqueued - the queue's length,
  done = the finished + failed registries' sizes.  No counter is added to the job.
- the job is a plain ``def`` (RQ's only kind).
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
from rq import Queue

from benchmarks.common import CHECK_EVERY, WARMUP, Stopwatch, Timed, WorkerSetup, paced, spawn
from benchmarks.redis_server import RedisSystem
from benchmarks.rq_jobs import noop

QUEUE = "default"
LOG_LEVEL = os.environ.get("BENCH_RQ_LOG_LEVEL", "WARNING")
WORKER_CLASSES = {"Worker": "rq.Worker", "SimpleWorker": "rq.SimpleWorker"}


def _with_queue(url: str, body: Callable[[Queue], Any]) -> Any:
    connection = redis.Redis.from_url(url)
    try:
        queue = Queue(QUEUE, connection=connection)
        for i in range(-WARMUP, 0):
            queue.enqueue(noop, i)
        return body(queue)
    finally:
        connection.close()


class RQSystem(RedisSystem):
    name = "rq"
    packages = ("rq", "redis")
    queue_keys = (f"rq:queue:{QUEUE}",)

    def completed(self, client: redis.Redis, total: int) -> int:
        pipe = client.pipeline(transaction=False)
        pipe.zcard(f"rq:finished:{QUEUE}")
        pipe.zcard(f"rq:failed:{QUEUE}")
        return sum(int(n) for n in pipe.execute())

    def succeeded(self, client: redis.Redis, total: int) -> int:
        return int(client.zcard(f"rq:finished:{QUEUE}"))

    def enqueue_single(self, url: str, n: int, limit: float = math.inf) -> Timed:
        def body(queue: Queue) -> Timed:
            clock = Stopwatch(limit)
            for i in range(n):
                queue.enqueue(noop, i)
                if i % CHECK_EVERY == 0 and clock.expired():
                    return clock.result(i + 1)
            return clock.result(n)

        result: Timed = _with_queue(url, body)
        return result

    def enqueue_bulk(self, url: str, n: int, batch: int, limit: float = math.inf) -> Timed:
        def body(queue: Queue) -> Timed:
            clock = Stopwatch(limit)
            for first in range(0, n, batch):
                last = min(n, first + batch)
                queue.enqueue_many([Queue.prepare_data(noop, (i,)) for i in range(first, last)])
                if clock.expired():
                    return clock.result(last)
            return clock.result(n)

        result: Timed = _with_queue(url, body)
        return result

    def enqueue_paced(self, url: str, ids: Sequence[int], rate: float) -> list[tuple[float, float]]:
        def body(queue: Queue) -> list[tuple[float, float]]:
            return paced(ids, rate, lambda i, t: queue.enqueue(noop, i, t))

        result: list[tuple[float, float]] = _with_queue(url, body)
        return result

    def drain_setups(self) -> list[WorkerSetup]:
        return [
            WorkerSetup(1, {"worker_class": "Worker"}),  # its default: a fork per job
            WorkerSetup(2, {"worker_class": "Worker"}),
            WorkerSetup(1, {"worker_class": "SimpleWorker"}),
            WorkerSetup(2, {"worker_class": "SimpleWorker"}),
        ]

    def quick_drain_setups(self) -> list[WorkerSetup]:
        # RQ's default worker and its fast one, both: the report says which was faster.
        return [s for s in self.drain_setups() if s.processes == 2]

    def latency_setup(self) -> WorkerSetup:
        return WorkerSetup(1, {"worker_class": "Worker"})

    def start(
        self, url: str, setup: WorkerSetup, workdir: Path, env: dict[str, str]
    ) -> list[subprocess.Popen[bytes]]:
        worker_class = WORKER_CLASSES[str(setup.settings.get("worker_class", "Worker"))]
        args = [
            sys.executable,
            "-m",
            "rq.cli",
            "worker",
            "--url",
            url,
            "--worker-class",
            worker_class,
            "--config",
            "benchmarks.rq_jobs",
            "--logging_level",
            LOG_LEVEL,
            QUEUE,
        ]
        return [spawn(args, workdir, f"rq-{k}.log", env) for k in range(setup.processes)]

    def process_kind(self, cmdline: Sequence[str]) -> str:
        return "worker"

    def describe(self) -> dict[str, Any]:
        return {
            "job": "def noop(i) (RQ job function), results kept 500 s (its default)",
            "single enqueue": "queue.enqueue(noop, i) (one MULTI/EXEC pipeline per job)",
            "bulk enqueue": "queue.enqueue_many([Queue.prepare_data(noop, (i,)) ...]) per batch "
            "(one pipeline)",
            "workers": "rq worker --worker-class rq.Worker (a fork per job, its default) or "
            "rq.SimpleWorker (in-process), one job at a time each; --config benchmarks.rq_jobs "
            f"(the job's module imported before forking); --logging_level {LOG_LEVEL}",
            "drain counted from": "the queue list and the finished and failed registries",
        }
