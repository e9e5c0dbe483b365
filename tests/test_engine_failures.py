"""Failures of the engine itself map to the same typed errors on both engines:
lock conflicts, lost connections, timeouts; and the PostgreSQL settings hold."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from orchestrator_db import Database, Task
from orchestrator_db.errors import (
    DatabaseConfigurationError,
    DatabaseUnavailableError,
    StatementTimeoutError,
    TransactionConflictError,
)
from orchestrator_db.settings import SQLiteExecution
from tests.helpers import add_tasks, task

EXECUTION_MODES = pytest.mark.parametrize("execution", ["thread", "inline"])


@EXECUTION_MODES
async def test_sqlite_lock_wait_past_busy_timeout_is_a_conflict(
    sqlite_url: str, execution: SQLiteExecution
) -> None:
    db = Database(sqlite_url, busy_timeout=0.2, sqlite_execution=execution)
    try:
        async with db.unit_of_work() as holder:
            await holder.tasks.add(task())  # holds SQLite's write lock
            with pytest.raises(TransactionConflictError, match="busy_timeout"):
                async with db.unit_of_work() as waiter:
                    await waiter.tasks.count()
            await holder.commit()
        async with db.unit_of_work() as uow:
            assert await uow.tasks.count() == 1
    finally:
        await db.close()


@EXECUTION_MODES
async def test_a_writer_waiting_for_the_lock_lets_the_event_loop_run(
    sqlite_url: str, execution: SQLiteExecution
) -> None:
    """The waiter gets the lock once the holder commits; meanwhile the event
    loop keeps running other coroutines (inline: the wait is an asyncio
    sleep, not SQLite's busy handler)."""
    db = Database(sqlite_url, sqlite_execution=execution)
    ticks = 0
    holder_done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not holder_done.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    async def waiter() -> None:
        async with db.unit_of_work() as uow:
            await uow.tasks.add(task(title="second"))
            await uow.commit()

    try:
        async with db.unit_of_work() as holder:
            await holder.tasks.add(task(title="first"))  # holds the write lock
            ticking = asyncio.create_task(ticker())
            waiting = asyncio.create_task(waiter())
            await asyncio.sleep(0.3)
            assert not waiting.done()  # still waiting for the lock
            await holder.commit()
        holder_done.set()
        await asyncio.wait_for(waiting, 10)
        await ticking
        assert ticks >= 10  # about 30: the loop was never held during the wait
        async with db.unit_of_work(read_only=True) as uow:
            assert sorted(t.title for t in await uow.tasks.list()) == ["first", "second"]
    finally:
        await db.close()


async def test_postgresql_deadlock_is_a_conflict(postgres_database_url: str) -> None:
    db = Database(postgres_database_url)
    first, second = await add_tasks(db, task(title="a"), task(title="b"))
    both_locked = asyncio.Barrier(2)

    async def lock(order: list[Task]) -> str:
        try:
            async with db.unit_of_work() as uow:
                await uow.tasks.get(order[0].id, for_update=True)
                await both_locked.wait()
                await uow.tasks.get(order[1].id, for_update=True)
                await uow.commit()
            return "committed"
        except TransactionConflictError:
            return "conflict"

    try:
        outcomes = await asyncio.wait_for(
            asyncio.gather(lock([first, second]), lock([second, first])), timeout=30
        )
    finally:
        await db.close()
    assert sorted(outcomes) == ["committed", "conflict"]


async def test_postgresql_serialization_failure_is_a_conflict(postgres_database_url: str) -> None:
    db = Database(postgres_database_url, extra_engine_options={"isolation_level": "SERIALIZABLE"})
    both_read = asyncio.Barrier(2)

    async def write_skew(name: str) -> str:
        # Each reads "no review tasks" and adds one: one must fail.
        try:
            async with db.unit_of_work() as uow:
                assert await uow.tasks.count(task_type="review") == 0
                await both_read.wait()
                await uow.tasks.add(Task(title=name, task_type="review", config={}))
                await uow.commit()
            return "committed"
        except TransactionConflictError:
            return "conflict"

    try:
        outcomes = await asyncio.gather(write_skew("x"), write_skew("y"))
    finally:
        await db.close()
    assert sorted(outcomes) == ["committed", "conflict"]


async def test_a_lost_postgresql_connection_is_unavailable(postgres_database_url: str) -> None:
    db = Database(postgres_database_url)
    killer = Database(postgres_database_url)
    try:
        with pytest.raises(DatabaseUnavailableError):
            async with db.unit_of_work() as uow:
                pid = (await uow.session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
                async with killer.engine.begin() as connection:
                    await connection.execute(
                        text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}
                    )
                await uow.tasks.count()
        async with db.unit_of_work() as uow:  # the pool replaced the dead connection
            assert await uow.tasks.count() == 0
    finally:
        await db.close()
        await killer.close()


async def test_an_unopenable_sqlite_file_is_a_configuration_error(tmp_path: Path) -> None:
    """Not "unavailable": retrying cannot help while the directory is missing."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'missing-dir' / 'x.db'}")
    try:
        with pytest.raises(DatabaseConfigurationError, match="unable to open"):
            async with db.unit_of_work() as uow:
                await uow.tasks.count()
        assert not (await db.health_check()).ok
    finally:
        await db.close()


def test_a_failed_sqlite_open_leaves_no_dying_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiosqlite stops the worker thread of a connection that failed to open
    without waiting for it; a loop closed right after used to make that
    thread die with "Event loop is closed" (about 1 run in 10)."""
    crashed: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda hook: crashed.append(hook.exc_value))
    url = f"sqlite+aiosqlite:///{tmp_path / 'missing-dir' / 'x.db'}"

    async def fail_to_open() -> None:
        db = Database(url)
        try:
            with pytest.raises(DatabaseConfigurationError):
                async with db.unit_of_work() as uow:
                    await uow.tasks.count()
        finally:
            await db.close()

    for _ in range(100):
        asyncio.run(fail_to_open())  # each run closes its loop at once
    time.sleep(0.2)  # let any thread that is still going report
    assert crashed == []


async def test_postgresql_statement_timeout(postgres_database_url: str) -> None:
    db = Database(postgres_database_url, statement_timeout=0.2)
    try:
        with pytest.raises(StatementTimeoutError):
            async with db.unit_of_work() as uow:
                await uow.session.execute(text("SELECT pg_sleep(5)"))
    finally:
        await db.close()


async def test_postgresql_session_settings(postgres_database_url: str) -> None:
    db = Database(postgres_database_url, application_name="orchestrator-test")
    try:
        async with db.unit_of_work() as uow:
            row = (
                await uow.session.execute(
                    text(
                        "SELECT current_setting('application_name'), "
                        "current_setting('transaction_isolation'), "
                        "current_setting('transaction_read_only')"
                    )
                )
            ).one()
        assert tuple(row) == ("orchestrator-test", "read committed", "off")
        async with db.unit_of_work(read_only=True) as uow:
            read_only = (
                await uow.session.execute(text("SELECT current_setting('transaction_read_only')"))
            ).scalar_one()
        assert read_only == "on"
    finally:
        await db.close()


async def test_inline_units_of_work_back_to_back_still_let_the_loop_run(sqlite_url: str) -> None:
    """Inline statements never suspend: without the adapter's periodic yield,
    a coroutine looping over units of work would starve every other one."""
    db = Database(sqlite_url, sqlite_execution="inline")
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0)

    try:
        async with db.unit_of_work() as uow:
            await uow.tasks.add(task())  # connects: a real suspension, not measured
            await uow.commit()
        ticking = asyncio.create_task(ticker())
        await asyncio.sleep(0)  # let it start
        ticks = 0
        started = time.monotonic()
        while time.monotonic() - started < 0.1:
            async with db.unit_of_work() as uow:
                await uow.tasks.add(task())
                await uow.commit()
        done = True
        await ticking
        # About one yield per millisecond of work; never none.
        assert ticks >= 20
    finally:
        await db.close()


async def test_a_unit_cancelled_as_its_begin_returns_leaves_no_transaction_behind(
    postgres_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The BEGIN a write unit owes reaches the server, and the unit is
    cancelled before anything records it: the connection must not go back
    to the pool inside that transaction, where the next unit's commit would
    end nothing. (The cancellation is injected at the driver: the BEGIN
    itself is real.)"""
    from asyncpg.connection import Connection as DriverConnection

    db = Database(postgres_database_url, pool_size=1, max_overflow=0)
    try:
        (added,) = await add_tasks(db, task(title="before"))
        execute = DriverConnection.execute
        armed = [True]

        async def begin_then_cancel(self: DriverConnection, query: str, *args: object) -> str:
            done: str = await execute(self, query, *args)
            if armed[0] and query.startswith("BEGIN"):
                armed[0] = False
                raise asyncio.CancelledError
            return done

        monkeypatch.setattr(DriverConnection, "execute", begin_then_cancel)
        with pytest.raises(asyncio.CancelledError):
            async with db.unit_of_work() as uow:
                await uow.tasks.update(added.id, title="cancelled")
                await uow.commit()
        monkeypatch.undo()
        async with db.unit_of_work() as uow:
            await uow.tasks.update(added.id, title="after")
            await uow.commit()
        other = Database(postgres_database_url)
        try:
            async with other.unit_of_work(read_only=True) as uow:
                assert (await uow.tasks.get(added.id)).title == "after"
        finally:
            await other.close()
    finally:
        await db.close()
