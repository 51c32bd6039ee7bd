"""A TCP proxy in front of PostgreSQL that can partition one host from the database.

Each chaos "host" reaches PostgreSQL through its own :class:`Proxy`, listening on a 127.0.0.1
port and forwarding to the server's address (a Unix socket path, or ``host:port``).

``partition()`` black-holes the traffic the way a real network partition looks to both ends:
nothing is forwarded in either direction, but every socket stays open (half-open connections:
no RST, no FIN), and new connections are accepted and then hang.  Bytes written meanwhile wait
in the kernel's buffers, as unacknowledged TCP segments would, and flow again after ``heal()``
unless an end gave up on its own (a timeout, a keepalive).  A server restart during a partition
is noticed by the client only after the heal, as on a real network.

The proxy runs an asyncio loop in a daemon thread; ``close()`` stops it and closes every socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any

CHUNK = 65536


class Proxy:
    """Forward 127.0.0.1:<port> to ``target()`` (re-read for each new connection)."""

    def __init__(self, target: Callable[[], str], name: str = "proxy") -> None:
        self.target = target
        self.name = name
        self.port = 0
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._healed: asyncio.Event | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()
        self._call(self._start())

    # -- the public, thread-safe surface -------------------------------------------------------

    @property
    def partitioned(self) -> bool:
        assert self._healed is not None
        return not self._healed.is_set()

    def partition(self) -> None:
        """Stop forwarding in both directions; keep every socket open."""
        self._call(self._set_healed(False))

    def heal(self) -> None:
        """Forward again (what was written meanwhile is delivered)."""
        self._call(self._set_healed(True))

    def close(self) -> None:
        if not self._loop.is_running():
            return
        with contextlib.suppress(Exception):
            self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._loop.is_running():
            self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, None], timeout: float = 10.0) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=timeout)

    # -- inside the loop -------------------------------------------------------------------------

    async def _start(self) -> None:
        self._healed = asyncio.Event()
        self._healed.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _set_healed(self, healed: bool) -> None:
        assert self._healed is not None
        if healed:
            self._healed.set()
        else:
            self._healed.clear()

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _open_target(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        target = self.target()
        if target.startswith("/"):
            return await asyncio.open_unix_connection(target)
        host, _, port = target.rpartition(":")
        return await asyncio.open_connection(host, int(port))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        assert self._healed is not None
        try:
            await self._healed.wait()  # a partitioned host's connect hangs
            upstream_reader, upstream_writer = await self._open_target()
        except OSError:  # the server is down: refuse, as a stopped server does
            self._drop(writer)
            return
        self._writers.add(upstream_writer)
        await asyncio.gather(
            self._pump(reader, upstream_writer, writer),
            self._pump(upstream_reader, writer, upstream_writer),
        )

    async def _pump(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, other: asyncio.StreamWriter
    ) -> None:
        assert self._healed is not None
        try:
            while True:
                await self._healed.wait()  # partitioned: read nothing, so nothing is noticed
                data = await src.read(CHUNK)
                await self._healed.wait()  # read just before the partition: hold it
                if not data:
                    break
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._drop(dst)
            self._drop(other)

    def _drop(self, writer: asyncio.StreamWriter) -> None:
        self._writers.discard(writer)
        writer.close()
