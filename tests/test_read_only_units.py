"""Read-only SQLite units that check their connection out themselves stay
read-only when SQLAlchemy reconnects it, and give it back when cancelled
while it is made read-only. SQL of the caller's that would make a read-only
unit writable is refused, on every engine, and leaves no writable connection
behind for the units after it."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from sqlalchemy import DDL, select, text

from orchestrator_db import Database, Task
from orchestrator_db.errors import DataLayerError, ReadOnlyError
from tests.helpers import add_tasks, task

SLOW = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 5000000) "
    "SELECT count(*) FROM c"
)


async def test_invalidated_read_only_connection_stays_read_only(db: Database) -> None:
    if db.dialect != "sqlite":
        pytest.skip("SQLite")
    (added,) = await add_tasks(db, task(title="orig"))
    async with db.unit_of_work(read_only=True) as uow:
        await uow.tasks.get(added.id)  # the unit checks its connection out
        await (await uow.session.connection()).invalidate()
        await uow.rollback()
        with pytest.raises(ReadOnlyError):
            await uow.tasks.update(added.id, title="written")
    async with db.unit_of_work(read_only=True) as uow:
        assert (await uow.tasks.get(added.id)).title == "orig"


async def test_timed_out_read_only_unit_stays_read_only(db: Database) -> None:
    if db.dialect != "sqlite" or db.settings.sqlite_execution != "thread":
        pytest.skip("SQLite, thread mode")
    (added,) = await add_tasks(db, task(title="orig"))
    async with db.unit_of_work(read_only=True) as uow:
        await uow.tasks.get(added.id)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(uow.session.execute(text(SLOW)), 0.05)
        await uow.rollback()
        with pytest.raises(ReadOnlyError):
            await uow.tasks.update(added.id, title="written")


async def test_cancelled_checkout_gives_the_connection_back(db: Database) -> None:
    (added,) = await add_tasks(db, task(title="orig"))
    for k in range(1, 6):
        async with db.unit_of_work() as w:  # the pooled connection was a writer's
            await w.tasks.count()
            await w.commit()
        async with db.unit_of_work(read_only=True) as uow:
            job = asyncio.ensure_future(uow.tasks.get(added.id))
            for _ in range(k):
                await asyncio.sleep(0)
            job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await job
        assert db.pool_status().checked_out == 0, k


#: SQL that would make a read-only unit, or its pooled connection, writable.
UNLOCKS = {
    "sqlite": [
        ["PRAGMA query_only = OFF"],
        ["PRAGMA main.query_only(0)"],
        ["PRAGMA foreign_keys = OFF"],  # would outlive the unit
        ["ATTACH DATABASE ':memory:' AS other"],  # so would this
    ],
    "postgresql": [
        ["SET default_transaction_read_only = off"],
        ["SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE"],
        ["SELECT set_config('default_transaction_read_only', 'off', false)"],
        ["BEGIN", "SET TRANSACTION READ WRITE"],
        ["BEGIN ISOLATION LEVEL SERIALIZABLE", "SET TRANSACTION READ WRITE"],
        ["COMMIT"],  # behind PgBouncer: ends the unit's BEGIN READ ONLY
    ],
}


@pytest.mark.parametrize("attempt", range(7))
@pytest.mark.parametrize("through", ["session", "connection", "keyword", "ddl"])
async def test_sql_that_would_unlock_a_read_only_unit_leaves_it_read_only(
    db: Database, attempt: int, through: str
) -> None:
    unlocks = UNLOCKS["sqlite" if db.dialect == "sqlite" else "postgresql"]
    if db.settings.pgbouncer:
        # Every read-only unit is a BEGIN READ ONLY transaction there.
        unlocks = [["SET TRANSACTION READ WRITE"], *unlocks]
    if attempt >= len(unlocks):
        pytest.skip(f"{len(unlocks)} ways on this engine")
    (added,) = await add_tasks(db, task(title="orig"))
    for round_ in range(3):  # the pool hands the same connection out again
        async with db.unit_of_work(read_only=True) as uow:
            connection = await uow.session.connection()
            run: Any = connection.execute if through == "connection" else uow.session.execute
            with contextlib.suppress(DataLayerError):
                # Refused as it runs, or undone after it: either way ...
                for sql in unlocks[attempt]:
                    if through == "keyword":
                        await uow.session.execute(statement=text(sql))
                    else:
                        await run(DDL(sql) if through == "ddl" else text(sql))  # type: ignore[no-untyped-call]
                # ... the unit cannot write, by the repository or by SQL.
                with pytest.raises(DataLayerError):
                    await uow.tasks.update(added.id, title=f"written {round_}")
            await uow.rollback()
            with pytest.raises(DataLayerError):
                await run(
                    text("UPDATE tasks SET title = 'by sql' WHERE id = :id"),
                    {"id": str(added.id)},
                )
        async with db.unit_of_work(read_only=True) as uow:
            with pytest.raises(ReadOnlyError):
                await uow.tasks.update(added.id, title="later")
    async with db.unit_of_work() as uow:
        assert (await uow.tasks.get(added.id)).title == "orig"
        await uow.tasks.update(added.id, title="a write unit writes")
        await uow.commit()


async def test_a_read_only_unit_reads_what_pragmas_describe(db: Database) -> None:
    if db.dialect != "sqlite":
        pytest.skip("SQLite")
    async with db.unit_of_work(read_only=True) as uow:
        columns = (await uow.session.execute(text("PRAGMA table_info(tasks)"))).all()
        assert "title" in {row[1] for row in columns}
        (query_only,) = (await uow.session.execute(text("PRAGMA query_only"))).one()
        assert query_only == 1
    async with db.unit_of_work() as uow:
        (query_only,) = (await uow.session.execute(text("PRAGMA query_only"))).one()
        assert query_only == 0


async def test_a_connection_made_writable_around_the_unit_is_not_used_again(
    db: Database,
) -> None:
    """``run_sync`` goes around the checks of the caller's statements: the
    unit's own statements are refused, and the pool drops the connection."""
    if db.dialect != "postgresql" or db.settings.pgbouncer:
        pytest.skip("PostgreSQL's read-only pool")
    (added,) = await add_tasks(db, task(title="orig"))
    async with db.unit_of_work(read_only=True) as uow:
        await uow.session.run_sync(
            lambda session: session.execute(text("SET default_transaction_read_only = off"))
        )
        with pytest.raises(ReadOnlyError):
            await uow.tasks.update(added.id, title="written")
    for _ in range(3):
        async with db.unit_of_work(read_only=True) as uow:
            with pytest.raises(ReadOnlyError):
                await uow.tasks.update(added.id, title="later")
    async with db.unit_of_work(read_only=True) as uow:
        assert (await uow.tasks.get(added.id)).title == "orig"


@pytest.mark.parametrize("through", ["session", "connection", "async with"])
async def test_a_read_only_unit_streams_rows(db: Database, through: str) -> None:
    """A server-side cursor needs a transaction, which a read-only unit in
    autocommit does not have: it gets a read-only one, ended with the unit."""
    await add_tasks(db, task(title="first"))
    for expected in (["first"], ["first", "second"]):
        async with db.unit_of_work(read_only=True) as uow:
            connection = await uow.session.connection()
            if through == "session":
                streamed = await uow.session.stream_scalars(select(Task).order_by(Task.title))
                titles = [item.title async for item in streamed]
            elif through == "connection":
                scalars = await connection.stream_scalars(select(Task.title).order_by(Task.title))
                titles = [item async for item in scalars]
            else:
                async with connection.stream(select(Task.title).order_by(Task.title)) as rows:
                    titles = [row.title async for row in rows]
            assert titles == expected
            assert await uow.tasks.count() == len(expected)
            with pytest.raises(ReadOnlyError):
                await uow.tasks.update((await uow.tasks.list())[0].id, title="written")
        assert db.pool_status(read_only=True).checked_out == 0
        await add_tasks(db, task(title="second"))  # seen by the next unit
