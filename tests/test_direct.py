"""``get`` by primary key: PostgreSQL reads sent straight to asyncpg must be
indistinguishable from SQLAlchemy's, and taken only where that holds."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, inspect, select, text
from sqlalchemy.engine import Connection, Engine

from orchestrator_db import Database, Task, TaskStatus
from orchestrator_db._execution.compiled import compiled
from orchestrator_db._execution.direct import direct_fetch
from orchestrator_db._execution.engines import backend_for
from orchestrator_db.errors import (
    DatabaseUnavailableError,
    DuplicateKeyError,
    TransactionAbortedError,
    ValidationError,
)
from orchestrator_db.sql import queue as q
from orchestrator_db.types import new_id, utc_now
from tests.helpers import add_tasks, task

COLUMNS = [attr.key for attr in inspect(Task).column_attrs]


def driver_for(connection: Any) -> Any:
    """How the unit would run a statement on ``connection`` straight through
    its driver (``None``: through SQLAlchemy)."""
    return direct_fetch(connection, backend_for(connection.dialect.name))


def values_of(obj: Task) -> dict[str, Any]:
    return {c: getattr(obj, c) for c in COLUMNS}


async def orm_load(db: Database, task_id: str) -> dict[str, Any]:
    async with db.unit_of_work() as uow:
        loaded = (await uow.session.execute(select(Task).where(Task.id == task_id))).scalar_one()
        return values_of(loaded)


async def a_full_task(db: Database) -> Task:
    """A task with a value in every kind of column, including NULLs."""
    (parent,) = await add_tasks(db, task(title="parent"))
    (added,) = await add_tasks(
        db,
        task(
            config={"k": [1, "two", None], "nested": {"x": 1.5}},
            metadata_=None,
            started_at=utc_now() - timedelta(minutes=3),
            deadline=utc_now() + timedelta(days=1),
            priority=7,
            parent_task_id=parent.id,
            status=TaskStatus.RUNNING,
        ),
    )
    return added


@pytest.mark.parametrize("read_only", [True, False], ids=["read-only", "write"])
async def test_get_returns_what_the_orm_loads(db: Database, read_only: bool) -> None:
    added = await a_full_task(db)
    expected = await orm_load(db, added.id)
    async with db.unit_of_work(read_only=read_only) as uow:
        # A write unit reads directly once its transaction has begun.
        await uow.session.execute(text("SELECT 1"))
        got = await uow.tasks.get(added.id.upper())  # keys are canonicalised on the way in
        assert values_of(got) == expected
        assert type(got.status) is TaskStatus
        assert got.started_at is not None
        assert got.started_at.tzinfo is not None
        assert inspect(got).persistent and not inspect(got).modified
        assert await uow.tasks.get(added.id) is got
        assert await uow.tasks.get_or_none(new_id()) is None


async def test_a_pending_object_is_found_as_the_orm_would(db: Database) -> None:
    async with db.unit_of_work() as uow:
        pending = task(title="not flushed")
        uow.session.add(pending)  # no flush: get flushes first, like Session.get
        assert await uow.tasks.get(pending.id) is pending


@pytest.mark.parametrize("commit", [True, False], ids=["commit", "rollback"])
async def test_postgresql_write_units_go_direct_from_their_first_statement(
    postgres_database_url: str, commit: bool
) -> None:
    """A write unit's first statement goes straight to the driver too, once
    SQLAlchemy's adapter has sent the BEGIN it owes: the transaction is the
    adapter's, so the unit's commit and rollback end it as ever."""
    db = Database(postgres_database_url)
    try:
        (added,) = await add_tasks(db, task(title="before"))
        async with db.unit_of_work(read_only=True) as uow:
            assert driver_for(await uow.session.connection()) is not None
        async with db.unit_of_work() as uow:
            connection = await uow.session.connection()
            raw = (await connection.get_raw_connection()).driver_connection
            assert raw is not None and not raw.is_in_transaction()
            assert driver_for(connection) is not None
            await uow.tasks.update(added.id, title="after")
            assert raw.is_in_transaction()
            if commit:
                await uow.commit()
        async with db.unit_of_work(read_only=True) as uow:
            assert (await uow.tasks.get(added.id)).title == ("after" if commit else "before")
        assert db.pool_status().checked_out == 0
    finally:
        await db.close()


async def test_sqlite_goes_direct_through_the_package_adapter(sqlite_db: Database) -> None:
    async with sqlite_db.unit_of_work() as uow:
        # The adapter holds the unit's BEGIN IMMEDIATE and sends it first.
        assert driver_for(await uow.session.connection()) is not None


async def test_a_handle_error_listener_keeps_statements_on_sqlalchemys_path(db: Database) -> None:
    def handle(context: Any) -> None:
        return None

    event.listen(db.engine.sync_engine, "handle_error", handle)
    try:
        async with db.unit_of_work() as uow:
            assert driver_for(await uow.session.connection()) is None
    finally:
        event.remove(db.engine.sync_engine, "handle_error", handle)
    async with db.unit_of_work() as uow:
        await uow.session.execute(text("SELECT 1"))  # PostgreSQL: the BEGIN is sent
        assert driver_for(await uow.session.connection()) is not None


@pytest.mark.parametrize("target", [Engine, Connection], ids=["engine", "connection"])
async def test_statement_listeners_see_every_statement(db: Database, target: type) -> None:
    async with db.unit_of_work() as uow:
        added = await uow.tasks.submit(task())
        await uow.commit()
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(target, "before_cursor_execute", record)  # on every engine or connection
    try:
        for read_only in (True, False):
            async with db.unit_of_work(read_only=read_only) as uow:
                assert driver_for(await uow.session.connection()) is None
                assert (await uow.tasks.get(added.id)).id == added.id
        async with db.unit_of_work() as uow:
            claimed = await uow.tasks.claim_next("w")
            assert claimed is not None
            await uow.tasks.complete(claimed.id, "w")
    finally:
        event.remove(target, "before_cursor_execute", record)
    assert sum(s.lstrip().startswith("SELECT") and "FROM tasks" in s for s in statements) >= 2
    assert sum("UPDATE tasks" in s for s in statements) >= 2  # the claim, the completion


@pytest.mark.parametrize("read_only", [True, False], ids=["read-only", "write"])
async def test_a_connection_lost_under_a_direct_read_is_unavailable(
    postgres_database_url: str, read_only: bool
) -> None:
    db = Database(postgres_database_url)
    killer = Database(postgres_database_url)
    try:
        (added,) = await add_tasks(db, task())
        with pytest.raises(DatabaseUnavailableError):
            async with db.unit_of_work(read_only=read_only) as uow:
                pid = (await uow.session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
                assert driver_for(await uow.session.connection()) is not None
                async with killer.engine.begin() as connection:
                    await connection.execute(
                        text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}
                    )
                await uow.tasks.get(added.id)
        # The dead connection was discarded, not handed to the next unit.
        async with db.unit_of_work(read_only=read_only) as uow:
            assert (await uow.tasks.get(added.id)).id == added.id
    finally:
        await db.close()
        await killer.close()


async def test_statements_sqlalchemy_must_rewrite_go_its_way(db: Database) -> None:
    dialect = db.engine.dialect
    # An expanding IN (claiming by several task types) is rewritten per
    # execution; a claim by one type binds it as itself, compiled once.
    assert compiled(q.claim_statement(db.dialect, typed=2), dialect) is None
    assert compiled(q.claim_statement(db.dialect, typed=1), dialect) is not None
    assert compiled(q.claim_statement(db.dialect, typed=0), dialect) is not None
    async with db.unit_of_work() as uow:
        await uow.tasks.submit(task(task_type="code"))
        review = await uow.tasks.submit(task(task_type="review"))
        await uow.commit()
    async with db.unit_of_work() as uow:
        claimed = await uow.tasks.claim_next("w", task_types={"review"})
        assert claimed is not None
        assert claimed.id == review.id
        assert claimed.status is TaskStatus.RUNNING


async def test_a_failed_unit_runs_nothing_more(db: Database) -> None:
    """After a failed flush the unit awaits a rollback: a queue statement must
    not slip through on the connection of the failed transaction."""
    async with db.unit_of_work() as uow:
        ready = await uow.tasks.submit(task())
        await uow.commit()
    async with db.unit_of_work() as uow:
        await uow.tasks.get(ready.id)  # the unit now has a connection
        with pytest.raises(DuplicateKeyError):
            await uow.tasks.add(task(id=ready.id))  # refused by the database, in the flush
        with pytest.raises(TransactionAbortedError):
            await uow.tasks.claim_next("w")
    async with db.unit_of_work(read_only=True) as uow:
        assert (await uow.tasks.get(ready.id)).status is TaskStatus.READY


async def test_bad_values_are_validation_errors_on_either_path(db: Database) -> None:
    async with db.unit_of_work() as uow:
        await uow.tasks.submit(task())
        await uow.commit()
    async with db.unit_of_work() as uow:
        claimed = await uow.tasks.claim_next("w")
        assert claimed is not None
        await uow.commit()
    async with db.unit_of_work() as uow:
        with pytest.raises(ValidationError, match="result holds a set"):
            await uow.tasks.complete(claimed.id, "w", result={1, 2})  # a set is not JSON
    async with db.queue_worker("w") as worker:
        with pytest.raises(ValidationError, match="result holds a set"):
            await worker.complete(claimed.id, {3, 4})
    async with db.unit_of_work(read_only=True) as uow:  # nothing was half-written
        assert (await uow.tasks.get(claimed.id)).status is TaskStatus.RUNNING


async def test_a_read_only_unit_runs_everything_on_one_connection(
    database_url: str, database_options: dict[str, Any]
) -> None:
    """Reads sent straight to the driver and reads through the session share
    the unit's one connection: with a pool of one, a second would time out."""
    db = Database(database_url, pool_size=1, max_overflow=0, pool_timeout=2, **database_options)
    try:
        first, second = await add_tasks(db, task(title="first"), task(title="second"))
        async with db.unit_of_work(read_only=True) as uow:
            got = await uow.tasks.get(first.id)
            assert db.pool_status(read_only=True).checked_out == 1
            if db.dialect == "postgresql" and not db.settings.pgbouncer:
                # The unit checked its connection out itself (in autocommit),
                # and the session was bound to it.
                assert isinstance(uow.session.sync_session.bind, Connection)
            statement = select(Task).where(Task.id == first.id)
            assert (await uow.session.execute(statement)).scalar_one() is got  # one identity map
            assert [t.id for t in await uow.tasks.list()] == [first.id, second.id]
            assert (await uow.tasks.get(second.id)).title == "second"
            assert await uow.tasks.get(first.id) is got
            assert db.pool_status(read_only=True).checked_out == 1
        assert db.pool_status(read_only=True).checked_out == 0
    finally:
        await db.close()


async def select_one(uow: Any) -> None:
    assert (await uow.session.execute(text("SELECT 1"))).scalar_one() == 1


@pytest.mark.parametrize(
    "session_use", ["none", "before", "after-commit"], ids=lambda use: f"session-{use}"
)
async def test_read_only_units_give_back_their_connection_and_detach_their_objects(
    db: Database, session_use: str
) -> None:
    (added,) = await add_tasks(db, task())
    for fail in (False, True):
        with pytest.raises(RuntimeError) if fail else contextlib.nullcontext():
            async with db.unit_of_work(read_only=True) as uow:
                if session_use == "before":
                    await select_one(uow)  # the session takes a connection first
                got = await uow.tasks.get(added.id)
                assert inspect(got).persistent
                if session_use == "after-commit":
                    await uow.commit()
                    await select_one(uow)  # the session joins the unit's connection
                if fail:
                    raise RuntimeError("the caller failed")
        assert inspect(got).detached
        assert got.title == added.title  # detached, not expired: still readable
        assert db.pool_status(read_only=True).checked_out == 0
    # As after Session.close(), the session can be used again (and closed again).
    await select_one(uow)
    await uow.session.close()
    assert db.pool_status(read_only=True).checked_out == 0


# A pooled connection dropped without being given back is cleaned up by the
# garbage collector, with a warning raised where nobody can catch it.
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
async def test_reads_awaited_together_leave_no_connection_behind(db: Database) -> None:
    """A unit of work is not for concurrent use (SQLAlchemy's sessions and
    asyncpg's connections refuse it), but misusing one must not leak a pooled
    connection. The read pool starts empty, so both reads wait to connect."""
    first, second = await add_tasks(db, task(), task())
    with contextlib.suppress(Exception):
        async with db.unit_of_work(read_only=True) as uow:
            await asyncio.gather(
                uow.tasks.get(first.id), uow.tasks.get(second.id), return_exceptions=True
            )
    gc.collect()
    assert db.pool_status(read_only=True).checked_out == 0


@pytest.mark.parametrize("observed", [False, True], ids=["direct", "listened"])
async def test_a_read_only_unit_carries_on_after_losing_its_connection(
    postgres_database_url: str, observed: bool
) -> None:
    """With a statement listener set, reads go through SQLAlchemy; either
    way, a lost connection fails the unit until rollback(), and after it the
    unit carries on."""
    # A UUIDv7's first eight digits are its time (they change every ~65 s):
    # its random end keeps the two variants, run at once on two workers,
    # from killing each other's connections.
    name = f"odb-victim-{new_id()[-12:]}"
    db = Database(postgres_database_url, application_name=name)
    killer = Database(postgres_database_url)

    def record(*args: Any) -> None:
        return None

    if observed:
        event.listen(db._read_engine.sync_engine, "before_cursor_execute", record)
    try:
        first, second = await add_tasks(db, task(), task())
        async with db.unit_of_work(read_only=True) as uow:
            await uow.tasks.get(first.id)  # the unit has checked out its connection
            async with killer.engine.begin() as connection:
                killed = await connection.execute(
                    # Waits (up to 5 s) until the backend has exited.
                    text(
                        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                        "WHERE application_name = :name"
                    ),
                    {"name": name},
                )
                assert (True,) in killed.all()  # and the write pool's, if idle
            with pytest.raises(DatabaseUnavailableError):
                await uow.tasks.get(second.id)
            with pytest.raises(TransactionAbortedError):  # failed closed, as any unit
                await uow.tasks.get(second.id)
            await uow.rollback()
            assert (await uow.tasks.get(second.id)).id == second.id  # on a fresh connection
        assert db.pool_status(read_only=True).checked_out == 0
    finally:
        await db.close()
        await killer.close()


async def test_a_read_only_unit_does_not_pass_on_a_transaction_begun_as_sql(
    postgres_database_url: str,
) -> None:
    """A read-only PostgreSQL unit runs in autocommit; a BEGIN its caller
    sends as SQL would otherwise go back to the pool open, and the next
    unit on that connection would read that transaction's old snapshot."""
    db = Database(postgres_database_url, pool_size=1, max_overflow=0)
    try:
        (added,) = await add_tasks(db, task(title="old"))
        async with db.unit_of_work(read_only=True) as uow:
            await uow.session.execute(text("BEGIN ISOLATION LEVEL REPEATABLE READ"))
            assert (await uow.tasks.get(added.id)).title == "old"
        async with db.unit_of_work() as uow:
            await uow.tasks.update(added.id, title="new")
            await uow.commit()
        async with db.unit_of_work(read_only=True) as uow:
            assert (await uow.tasks.get(added.id)).title == "new"
        assert db.pool_status(read_only=True).checked_out == 0
    finally:
        await db.close()
