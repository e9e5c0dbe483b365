"""``get`` by primary key: PostgreSQL reads sent straight to asyncpg must be
indistinguishable from SQLAlchemy's, and taken only where that holds."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, inspect, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import PendingRollbackError

from orchestrator_db import Database, Task, TaskStatus
from orchestrator_db.errors import DatabaseUnavailableError, ValidationError
from orchestrator_db.repositories import direct
from orchestrator_db.repositories import task_queue as q
from orchestrator_db.repositories.direct import driver_for
from orchestrator_db.types import new_id, utc_now
from tests.helpers import add_tasks, task

COLUMNS = [attr.key for attr in inspect(Task).column_attrs]


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


async def test_postgresql_goes_direct_only_once_no_begin_is_owed(
    postgres_database_url: str,
) -> None:
    db = Database(postgres_database_url)
    try:
        async with db.unit_of_work(read_only=True) as uow:
            assert driver_for(await uow.session.connection()) is not None
        async with db.unit_of_work() as uow:
            connection = await uow.session.connection()
            assert driver_for(connection) is None  # SQLAlchemy's adapter sends the BEGIN
            await uow.session.execute(text("SELECT 1"))
            assert driver_for(connection) is not None
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


async def test_statement_listeners_see_every_statement(db: Database) -> None:
    async with db.unit_of_work() as uow:
        added = await uow.tasks.submit(task())
        await uow.commit()
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(Engine, "before_cursor_execute", record)  # on every engine
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
        event.remove(Engine, "before_cursor_execute", record)
    assert sum(s.lstrip().startswith("SELECT") and "FROM tasks" in s for s in statements) >= 2
    assert sum(s.lstrip().startswith("UPDATE tasks") for s in statements) >= 2


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
    # An expanding IN (claiming by task type) is rewritten per execution.
    assert direct.compiled(q.claim_statement(db.dialect, typed=True), dialect) is None
    assert direct.compiled(q.claim_statement(db.dialect, typed=False), dialect) is not None
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
        with pytest.raises(ValidationError):
            await uow.tasks.add(task(deadline=datetime(2030, 1, 1)))  # naive: refused in flush
        with pytest.raises(PendingRollbackError):
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
        with pytest.raises(ValidationError, match="rejected"):
            await uow.tasks.complete(claimed.id, "w", result={1, 2})  # a set is not JSON
    async with db.queue_worker("w") as worker:
        with pytest.raises(ValidationError, match="rejected"):
            await worker.complete(claimed.id, {3, 4})
    async with db.unit_of_work(read_only=True) as uow:  # nothing was half-written
        assert (await uow.tasks.get(claimed.id)).status is TaskStatus.RUNNING
