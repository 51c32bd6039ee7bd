"""The pool: a connection that sat idle is tested before use, one in steady use is not."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from pgjobs.db import database as database_module
from pgjobs.db.database import Database


def _kill(url: str, pid: int) -> None:
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_an_idle_connection_killed_by_the_server_is_replaced(
    test_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database(test_database_url, pool_size=1)
    try:
        with db.connection() as conn:
            pid = conn.info.backend_pid
        _kill(test_database_url, pid)
        monkeypatch.setattr(database_module, "CHECK_AFTER_IDLE", 0.0)  # it has been idle "long"
        with db.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            assert conn.info.backend_pid != pid
    finally:
        db.close()


def test_a_connection_in_steady_use_is_not_tested(
    test_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database(test_database_url, pool_size=1)
    checks: list[object] = []
    monkeypatch.setattr(
        database_module.ConnectionPool, "check_connection", staticmethod(checks.append)
    )
    try:
        for _ in range(5):
            with db.connection() as conn:
                conn.execute("SELECT 1")
        assert len(checks) == 1  # the first checkout only: it had never been used
    finally:
        db.close()


def test_the_async_pool_replaces_a_killed_idle_connection(
    test_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> tuple[int, int]:
        db = Database(test_database_url, pool_size=1)
        try:
            async with db.async_connection() as conn:
                pid = conn.info.backend_pid
            _kill(test_database_url, pid)
            monkeypatch.setattr(database_module, "CHECK_AFTER_IDLE", 0.0)
            async with db.async_connection() as conn:
                await conn.execute("SELECT 1")
                return pid, conn.info.backend_pid
        finally:
            await db.close_async()

    before, after = asyncio.run(scenario())
    assert before != after
