"""Repository calls on the Database (``await db.tasks.update(...)``): each
call a unit of work of its own, of the kind its method's plan says; one-
statement writes commit on their own, with no transaction around them."""

from __future__ import annotations

import asyncio
import copy
import uuid
from datetime import UTC, datetime
from inspect import signature
from typing import Any

import pytest
from sqlalchemy import event, inspect
from sqlalchemy.orm import with_loader_criteria

from orchestrator_db import Database, Task, TaskStatus, Workflow
from orchestrator_db._execution.postgresql import POSTGRESQL
from orchestrator_db._execution.sqlite import SQLITE
from orchestrator_db.calls import kind_of
from orchestrator_db.errors import (
    ForeignKeyViolationError,
    InternalError,
    NotFoundError,
    PoolTimeoutError,
    ReadOnlyError,
    ValidationError,
)
from orchestrator_db.repositories.base import one_statement, plan_of, reads
from orchestrator_db.repositories.task import TaskRepository
from orchestrator_db.settings import DatabaseSettings
from tests.helpers import add_tasks, task


async def stored(db: Database, task_id: str) -> Task:
    async with db.unit_of_work(read_only=True, fresh=True) as uow:
        return await uow.tasks.get(task_id)


async def test_calls_return_what_a_unit_would_detached(db: Database) -> None:
    (added,) = await add_tasks(db, task(title="before"))
    updated = await db.tasks.update(added.id, title="after", config={"k": [1, "two"]})
    assert (updated.title, updated.config) == ("after", {"k": [1, "two"]})
    assert inspect(updated).detached
    assert updated.updated_at > added.updated_at
    kept = await stored(db, added.id)
    assert (kept.title, kept.config, kept.updated_at) == (
        "after",
        {"k": [1, "two"]},
        updated.updated_at,
    )
    got = await db.tasks.get(added.id)
    assert inspect(got).detached
    assert {c.key: getattr(got, c.key) for c in inspect(Task).column_attrs} == {
        c.key: getattr(kept, c.key) for c in inspect(Task).column_attrs
    }
    assert await db.tasks.get_or_none(str(uuid.uuid4())) is None
    assert [t.id for t in await db.tasks.list(title="after")] == [added.id]
    assert (await db.tasks.page(limit=5)).items[0].id == added.id
    assert await db.tasks.count(title="after") == 1
    assert await db.tasks.exists(title="after")
    with pytest.raises(NotFoundError):
        await db.tasks.update(str(uuid.uuid4()), title="nobody")


@pytest.mark.parametrize("echo", [False, True], ids=["direct", "through SQLAlchemy"])
async def test_a_one_statement_write_commits_before_its_unit_ends(
    database_url: str, database_options: dict[str, Any], echo: bool
) -> None:
    async with Database(database_url, **database_options, echo=echo) as db:
        await one_statement_alone(db)


async def one_statement_alone(db: Database) -> None:
    (added,) = await add_tasks(db, task(title="before"))
    async with db._unit("write alone") as uow:
        await uow.tasks.update(added.id, title="alone")
        # No transaction holds it: another connection sees it already.
        assert (await stored(db, added.id)).title == "alone"
        # A second statement is refused: the first committed on its own.
        with pytest.raises(InternalError, match="second"):
            await uow.tasks.update(added.id, title="again")
    assert (await stored(db, added.id)).title == "alone"


async def test_pooled_connections_keep_their_transactions_after_a_call(
    database_url: str, database_options: dict[str, Any]
) -> None:
    """The autocommit of a one-statement write stays with its call: the
    next unit on the same (only) pooled connection is a transaction again."""
    options = {**database_options, "pool_size": 1, "max_overflow": 0}
    async with Database(database_url, **options) as db:
        (added,) = await add_tasks(db, task(title="kept"))
        for _ in range(2):
            await db.tasks.update(added.id, title="kept")
            async with db.unit_of_work() as uow:
                await uow.tasks.update(added.id, title="rolled back")
                await uow.rollback()
            assert (await stored(db, added.id)).title == "kept"
            assert db.pool_status().checked_out == 0


async def test_a_refused_call_writes_nothing_and_gives_its_connection_back(
    db: Database,
) -> None:
    (added,) = await add_tasks(db, task(title="before"))
    with pytest.raises(ForeignKeyViolationError):
        await db.tasks.update(added.id, title="x", parent_task_id=str(uuid.uuid4()))
    with pytest.raises(ValidationError):
        await db.tasks.update(added.id, title="\x00")
    with pytest.raises(ValidationError):
        await db.tasks.update(added.id, status="running")  # a domain method's field
    kept = await stored(db, added.id)
    assert (kept.title, kept.parent_task_id) == ("before", None)
    assert db.pool_status().checked_out == 0
    assert db.pool_status(read_only=True).checked_out == 0


async def test_updates_that_need_more_than_one_statement_get_a_unit(db: Database) -> None:
    """A new priority refreshes the calculated one; a given updated_at is
    read back as the row keeps it."""
    first, second = await add_tasks(db, task(), task())
    async with db.unit_of_work() as uow:
        in_unit = await uow.tasks.update(first.id, priority=9)
        await uow.commit()
    called = await db.tasks.update(second.id, priority=9)
    assert called.calculated_priority == in_unit.calculated_priority
    assert (await stored(db, second.id)).calculated_priority == in_unit.calculated_priority
    when = datetime(2030, 1, 2, 3, 4, 5, 6000, tzinfo=UTC)
    given = await db.tasks.update(first.id, title="dated", updated_at=when)
    assert given.updated_at == (await stored(db, first.id)).updated_at


async def test_delete_calls_keep_the_graph(db: Database) -> None:
    alone = await db.tasks.submit(task())
    prerequisite = await db.tasks.submit(task())
    dependent = await db.tasks.submit(task(), depends_on=[prerequisite.id])
    assert (await stored(db, dependent.id)).status is TaskStatus.BLOCKED
    assert await db.tasks.delete(alone.id)
    assert await db.tasks.delete(prerequisite.id)  # linked: run again in a unit
    assert await db.tasks.get_or_none(alone.id) is None
    released = await stored(db, dependent.id)
    assert released.status is TaskStatus.READY
    assert await db.tasks.dependencies_of(dependent.id) == []
    assert not await db.tasks.delete(prerequisite.id)
    assert not await db.tasks.delete(str(uuid.uuid4()))


class Declared(TaskRepository):
    """Methods of a user's repository, declared well and badly."""

    @one_statement()
    async def two_statements(self, task_id: str) -> None:
        await self.update(task_id, title="first")
        await self.update(task_id, title="second")

    @one_statement()
    async def tries_first(self, task_id: str) -> str:
        if not await self.exists(id=task_id, title="ready to go"):
            try:
                self._ex.needs_transaction()  # nothing written: a unit, please
            except Exception:  # not caught here: it is no error
                return "swallowed"
            await self.update(task_id, title="ready to go")
            return "in a unit"
        return "alone"

    async def undeclared(self, task_id: str) -> None:
        await self.update(task_id, title="one")
        await self.update(task_id, title="two")

    @reads
    async def claims_to_read(self, task_id: str) -> None:
        await self.update(task_id, title="written")


async def test_user_repositories_run_as_declared(db: Database) -> None:
    (added,) = await add_tasks(db, task(title="start"))
    declared = db.repository(Declared)
    with pytest.raises(InternalError, match="declared one statement"):
        await declared.two_statements(added.id)
    assert (await stored(db, added.id)).title == "first"  # committed on its own
    assert await declared.tries_first(added.id) == "in a unit"
    assert await declared.tries_first(added.id) == "alone"
    await declared.undeclared(added.id)
    assert (await stored(db, added.id)).title == "two"
    with pytest.raises(ReadOnlyError):
        await declared.claims_to_read(added.id)
    assert (await stored(db, added.id)).title == "two"
    assert db.pool_status().checked_out == 0


async def test_calls_are_only_a_repositorys_coroutine_methods(db: Database) -> None:
    assert "update" in dir(db.tasks) and "session" not in dir(db.tasks)
    with pytest.raises(AttributeError, match="unit of work"):
        db.tasks.session  # noqa: B018
    with pytest.raises(AttributeError):
        db.tasks._flush  # noqa: B018
    with pytest.raises(ValidationError):
        db.repository(Task)  # type: ignore[type-var]
    assert db.tasks is db.tasks
    assert db.tasks.update.__doc__ == TaskRepository.update.__doc__
    assert list(signature(db.tasks.update).parameters) == ["key", "values"]
    assert copy.copy(db.tasks).update is not None


@pytest.mark.parametrize(
    ("method", "args", "kwargs", "sqlite", "postgresql"),
    [
        ("get", ("k",), {}, "read alone", "read alone"),
        ("get", ("k",), {"for_update": True}, "write", "write"),
        ("get", (), {}, "write", "write"),  # refused by get itself, in a unit
        ("list", (), {"limit": 3}, "read", "read"),
        ("update", ("k",), {"title": "t"}, "write alone", "write alone"),
        ("update", (), {"key": "k", "title": "t"}, "write alone", "write alone"),
        ("update", ("k",), {"priority": 3}, "write", "write"),
        ("update", ("k",), {"updated_at": None}, "write", "write"),
        ("delete", ("k",), {}, "write alone", "write alone"),
        ("submit", (task(),), {}, "write", "write"),
        ("stats", (), {}, "read", "read"),
    ],
)
def test_each_call_gets_the_unit_its_plan_says(
    method: str, args: tuple[Any, ...], kwargs: dict[str, Any], sqlite: str, postgresql: str
) -> None:
    plan = plan_of(getattr(TaskRepository, method))
    for dialect, expected in (("sqlite", sqlite), ("postgresql", postgresql)):
        assert kind_of(plan, TaskRepository, dialect, args, kwargs) == expected


async def test_writes_run_in_a_unit_where_they_cannot_run_alone(
    postgres_database_url: str,
) -> None:
    """Behind PgBouncer with a statement timeout, one-statement writes run
    (and commit) in write units: the timeout is each transaction's own."""
    async with Database(postgres_database_url, pgbouncer=True, statement_timeout=5.0) as db:
        (added,) = await add_tasks(db, task(title="before"))
        assert (await db.tasks.update(added.id, title="after")).title == "after"
        assert (await stored(db, added.id)).title == "after"
        assert await db.tasks.delete(added.id)
        assert await db.tasks.get_or_none(added.id) is None


def test_one_statement_writes_are_kept_from_pgbouncer_with_a_statement_timeout() -> None:
    # The timeout is each transaction's own there: a statement alone has none.
    assert not POSTGRESQL.autocommit_writes(DatabaseSettings(pgbouncer=True, statement_timeout=5.0))
    assert POSTGRESQL.autocommit_writes(DatabaseSettings(pgbouncer=True))
    assert POSTGRESQL.autocommit_writes(DatabaseSettings(statement_timeout=5.0))
    assert SQLITE.autocommit_writes(DatabaseSettings())


async def test_reads_see_what_was_committed_when_they_ran(db: Database) -> None:
    """Reads see what was committed when they ran, as read-only units do."""
    (added,) = await add_tasks(db, task(title="one"))
    async with db.unit_of_work() as uow:
        await uow.tasks.update(added.id, title="uncommitted")
        assert (await db.tasks.get(added.id)).title == "one"
        await uow.commit()
    assert (await db.tasks.get(added.id)).title == "uncommitted"


async def test_calls_go_through_sqlalchemy_when_it_must_see_them(
    database_url: str, database_options: dict[str, Any]
) -> None:
    """With echo on (or a listener), a one-statement call runs in a unit,
    where SQLAlchemy sees its statement: the same results."""
    async with Database(database_url, **database_options, echo=True) as db:
        (added,) = await add_tasks(db, task(title="before"))
        assert (await db.tasks.update(added.id, title="after")).title == "after"
        assert (await db.tasks.get(added.id)).title == "after"
        assert await db.tasks.delete(added.id)
        assert await db.tasks.get_or_none(added.id) is None
        assert db.pool_status().checked_out == 0


class Sneaky(TaskRepository):
    @reads(one_statement=True)
    async def reads_but_writes(self, task_id: str) -> Task:
        return await self.update(task_id, title="written")


async def test_a_call_declared_a_read_cannot_write(db: Database) -> None:
    (added,) = await add_tasks(db, task(title="kept"))
    with pytest.raises(ReadOnlyError):
        await db.repository(Sneaky).reads_but_writes(added.id)
    assert (await stored(db, added.id)).title == "kept"
    # A write of the session's (the generic delete) runs in a unit instead.
    workflow = await db.workflows.add(Workflow(name="w", definition={}))
    assert await db.workflows.delete(workflow.id)
    assert await db.workflows.get_or_none(workflow.id) is None
    assert db.pool_status().checked_out == 0


async def test_a_cancelled_call_gives_its_connection_back(db: Database) -> None:
    """A call cancelled while it waits for a lock drops its connection; the
    pool and later calls are unharmed (whether the write took effect is
    unknown, as the README says)."""
    (added,) = await add_tasks(db, task(title="before"))
    async with db.unit_of_work() as uow:
        await uow.tasks.update(added.id, title="held")  # the row's (or SQLite's) lock
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await db.tasks.update(added.id, title="late")
        await uow.commit()
    assert db.pool_status().checked_out == 0
    # The dropped connection closes in aiosqlite's thread meanwhile, without
    # being awaited (as a unit's dropped connection does): let it finish
    # before the test's event loop closes.
    await asyncio.sleep(0.3)
    assert (await db.tasks.update(added.id, title="after")).title == "after"
    assert (await stored(db, added.id)).title == "after"


async def test_a_delete_waits_for_a_dependency_being_added(db: Database) -> None:
    """A task deleted alone while a unit is adding a dependency on it: the
    delete waits for the unit and then sees the dependency, so the dependent
    is released, never left blocked by a task that is gone."""
    prerequisite = await db.tasks.submit(task())
    dependent = await db.tasks.submit(task())
    async with db.unit_of_work() as uow:
        await uow.tasks.add_dependency(dependent.id, prerequisite.id)
        deleting = asyncio.create_task(db.tasks.delete(prerequisite.id))
        await asyncio.sleep(0.3)  # the delete has begun, and waits
        assert not deleting.done()
        await uow.commit()
    assert await deleting
    assert await db.tasks.get_or_none(prerequisite.id) is None
    assert await db.tasks.dependencies_of(dependent.id) == []
    assert (await stored(db, dependent.id)).status is TaskStatus.READY


class Reads(TaskRepository):
    @reads(one_statement=True)
    async def two(self, first: str, second: str) -> list[Task]:
        self._ex.needs_transaction()  # nothing in a read
        return [await self.get(first), await self.get(second)]


async def test_a_read_of_one_statement_may_send_more(db: Database) -> None:
    first, second = await add_tasks(db, task(title="1"), task(title="2"))
    found = await db.repository(Reads).two(first.id, second.id)
    assert [t.title for t in found] == ["1", "2"]


async def test_calls_count_as_units_in_the_metrics(db: Database) -> None:
    (added,) = await add_tasks(db, task())
    before = await db.metrics()
    await db.tasks.update(added.id, title="x")  # alone
    with pytest.raises(NotFoundError):
        await db.tasks.update(str(uuid.uuid4()), title="x")  # alone, failed
    await db.workflows.delete(str(uuid.uuid4()))  # declined: in a unit
    after = await db.metrics()
    # (metrics() itself is a read-only unit: one more opened.)
    assert after.units_opened - before.units_opened == 3 + 1
    assert after.units_failed - before.units_failed == 1


async def test_a_call_the_pool_cannot_serve_counts_as_a_failed_unit(
    database_url: str, database_options: dict[str, Any]
) -> None:
    options = {**database_options, "pool_size": 1, "max_overflow": 0, "pool_timeout": 0.2}
    async with Database(database_url, **options) as db:
        (added,) = await add_tasks(db, task())
        before = await db.metrics()
        async with db.unit_of_work() as holder:
            await holder.tasks.get(added.id)  # the write pool's only connection
            with pytest.raises(PoolTimeoutError):
                await db.tasks.update(added.id, title="x")
        after = await db.metrics()
        # metrics()' own unit, the holder, the call
        assert after.units_opened - before.units_opened == 3
        assert after.units_failed - before.units_failed == 1
        assert db.pool_status().checked_out == 0


async def test_refused_arguments_do_not_wait_for_the_pool(
    database_url: str, database_options: dict[str, Any]
) -> None:
    """Values are checked before a connection is asked for: with the pool
    exhausted, a bad call is refused at once, as in a unit of work."""
    options = {**database_options, "pool_size": 1, "max_overflow": 0, "pool_timeout": 30}
    async with Database(database_url, **options) as db:
        (added,) = await add_tasks(db, task())
        async with db.unit_of_work() as holder:
            await holder.tasks.get(added.id)  # the write pool's only connection
            async with asyncio.timeout(5):
                with pytest.raises(ValidationError):
                    await db.tasks.update("not-a-uuid", title="x")
                with pytest.raises(ValidationError):
                    await db.tasks.update(added.id, title="\x00")


async def test_a_session_class_query_hook_sees_counts_on_the_database(db: Database) -> None:
    """count() and exists() run alone, outside any session, unless a
    do_orm_execute hook is set where a call's unit would see it: on the
    session class of db.session_factory() (or on Session itself)."""
    await add_tasks(db, task(title="secret"), task(title="public"))
    assert await db.tasks.count() == 2
    assert await db.tasks.exists(title="secret")

    def hide(state: Any) -> None:
        if state.is_select:
            rule = with_loader_criteria(Task, Task.title != "secret")
            state.statement = state.statement.options(rule)

    session_class = db.session_factory(read_only=True).class_.sync_session_class
    event.listen(session_class, "do_orm_execute", hide)
    try:
        assert [t.title for t in await db.tasks.list()] == ["public"]
        assert await db.tasks.count() == 1
        assert not await db.tasks.exists(title="secret")
    finally:
        event.remove(session_class, "do_orm_execute", hide)
    assert await db.tasks.count() == 2


async def test_an_engine_connect_listener_sees_every_call(
    database_url: str, database_options: dict[str, Any]
) -> None:
    async with Database(database_url, **database_options) as db:
        (added,) = await add_tasks(db, task())
        seen: list[object] = []
        for engine in (db.engine, db._read_engine):
            event.listen(engine.sync_engine, "engine_connect", seen.append)
        await db.tasks.update(added.id, title="x")
        await db.tasks.get(added.id)
        assert len(seen) >= 2


async def test_inline_calls_let_other_coroutines_run(sqlite_url: str) -> None:
    async with Database(sqlite_url, sqlite_execution="inline") as db:
        (added,) = await add_tasks(db, task())
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        ticking = asyncio.create_task(tick())
        await asyncio.sleep(0)
        started = ticks
        for i in range(300):
            await db.tasks.get(added.id)
            await db.tasks.update(added.id, title=f"t{i}")
        ticking.cancel()
        assert ticks > started
