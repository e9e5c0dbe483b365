"""Write units check their connection out themselves and begin their
transaction on it; statements sent straight to the driver and statements the
session runs (a flush, the caller's SQL) share that one transaction, and
every way of ending the unit ends both together."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from sqlalchemy import event, text

from orchestrator_db import Database
from orchestrator_db.errors import TransactionAbortedError, ValidationError
from tests.helpers import add_tasks, task


async def titles(db: Database) -> dict[str, str]:
    async with db.unit_of_work(read_only=True) as uow:
        return {str(t.id): t.title for t in await uow.tasks.list()}


@pytest.mark.parametrize("direct_first", [True, False])
@pytest.mark.parametrize("end", ["commit", "session.commit", "rollback", "exit"])
async def test_direct_and_session_statements_end_together(
    db: Database, direct_first: bool, end: str
) -> None:
    first, second = await add_tasks(db, task(title="one"), task(title="two"))
    async with db.unit_of_work() as uow:

        async def direct() -> None:
            await uow.tasks.update(first.id, title="direct")  # UPDATE ... RETURNING, direct

        async def through_session() -> None:
            held = await uow.session.get(type(second), second.id)
            assert held is not None
            held.title = "flushed"
            await uow.session.flush()

        for step in (direct, through_session) if direct_first else (through_session, direct):
            await step()
        if end == "commit":
            await uow.commit()
        elif end == "session.commit":
            await uow.session.commit()
        elif end == "rollback":
            await uow.rollback()
    kept = end in ("commit", "session.commit")
    assert await titles(db) == {
        str(first.id): "direct" if kept else "one",
        str(second.id): "flushed" if kept else "two",
    }
    assert db.pool_status().checked_out == 0


async def test_work_after_a_commit_is_a_transaction_of_its_own(db: Database) -> None:
    (added,) = await add_tasks(db, task(title="one"))
    async with db.unit_of_work() as uow:
        await uow.tasks.update(added.id, title="committed")
        await uow.commit()
        await uow.tasks.update(added.id, title="rolled back")
        await uow.rollback()
        assert (await uow.tasks.get(added.id)).title == "committed"
        await uow.tasks.update(added.id, title="committed again")
        await uow.session.commit()
    assert await titles(db) == {str(added.id): "committed again"}


async def test_objects_stay_loaded_after_the_unit(db: Database) -> None:
    (added,) = await add_tasks(db, task(title="one"))
    async with db.unit_of_work() as uow:
        got = await uow.tasks.get(added.id)  # direct, then adopted
        listed = await uow.tasks.list()  # the ORM's loader, through the session
    assert got.title == "one"
    assert [t.title for t in listed] == ["one"]


async def test_an_invalidated_unit_keeps_nothing_and_drops_its_connection(
    db: Database,
) -> None:
    (added,) = await add_tasks(db, task(title="one"))
    connects: list[object] = []
    event.listen(db.engine.sync_engine, "connect", lambda dbapi, record: connects.append(dbapi))
    async with db.unit_of_work() as uow:
        await uow.tasks.update(added.id, title="lost")
        await uow.session.invalidate()
        assert not connects
        assert (await uow.tasks.get(added.id)).title == "one"
    assert len(connects) == 1  # the pool opened a new one in its place
    assert await titles(db) == {str(added.id): "one"}
    assert db.pool_status().checked_out == 0


async def test_a_failed_statement_fails_direct_and_session_work_alike(db: Database) -> None:
    first, second = await add_tasks(db, task(title="one"), task(title="two"))
    async with db.unit_of_work() as uow:
        await uow.tasks.update(first.id, title="direct")
        with pytest.raises(Exception):  # noqa: B017, PT011 - the error's kind differs by engine
            await uow.session.execute(text("SELECT * FROM no_such_table"))
        with pytest.raises(TransactionAbortedError):
            await uow.commit()
        await uow.rollback()
        await uow.tasks.update(second.id, title="after")
        await uow.commit()
    assert await titles(db) == {str(first.id): "one", str(second.id): "after"}


async def test_the_callers_connection_is_the_units(db: Database) -> None:
    (added,) = await add_tasks(db, task(title="one"))
    async with db.unit_of_work() as uow:
        await uow.tasks.update(added.id, title="direct")
        connection: Any = await uow.session.connection()
        found = await connection.execute(
            text("SELECT title FROM tasks WHERE id = :id"), {"id": str(added.id)}
        )
        assert found.scalar_one() == "direct"  # the same transaction sees it
        await uow.commit()
    assert await titles(db) == {str(added.id): "direct"}


@pytest.mark.parametrize("how", ["rollback", "failure"])
async def test_a_rollback_reads_held_objects_again(db: Database, how: str) -> None:
    """An object the unit held from before its transaction, refreshed by a
    statement sent straight to the driver, is read again after a rollback."""
    (added,) = await add_tasks(db, task(title="one"))
    async with db.unit_of_work() as uow:
        held = await uow.tasks.get(added.id)
        await uow.commit()
        await uow.tasks.update(added.id, title="rolled back")
        assert held.title == "rolled back"
        if how == "failure":
            with pytest.raises(Exception):  # noqa: B017, PT011 - the kind differs by engine
                await uow.session.execute(text("SELECT * FROM no_such_table"))
        await uow.rollback()
        again = await uow.tasks.get(added.id)
        assert again is held
        assert held.title == "one"


async def test_session_begin_after_a_direct_statement_is_refused(db: Database) -> None:
    (added,) = await add_tasks(db, task(title="one"))
    async with db.unit_of_work() as uow:
        assert not uow.session.in_transaction()
        await uow.tasks.count()
        assert uow.session.in_transaction()
        with pytest.raises(ValidationError, match="already begun"):
            async with uow.session.begin():
                await uow.tasks.update(added.id, title="lost")
        await uow.tasks.update(added.id, title="kept")
        await uow.commit()
        assert not uow.session.in_transaction()
    assert await titles(db) == {str(added.id): "kept"}


async def test_a_savepoint_holds_statements_sent_straight_to_the_driver(db: Database) -> None:
    first, second = await add_tasks(db, task(title="one"), task(title="two"))
    woken: list[Iterable[str]] = []
    db._signals.wake = woken.append  # type: ignore[method-assign,assignment]
    async with db.unit_of_work() as uow:
        await uow.tasks.update(first.id, title="outer")
        with pytest.raises(RuntimeError):
            async with uow.session.begin_nested():
                await uow.tasks.update(second.id, title="inner")
                raise RuntimeError("back to the savepoint")
        async with uow.session.begin_nested():
            await uow.tasks.submit(task(title="submitted"))  # wakes, once committed
        assert woken == []  # a released savepoint commits nothing
        await uow.commit()
    assert len(woken) == 1
    assert sorted((await titles(db)).values()) == ["outer", "submitted", "two"]


async def test_session_factory_sessions_join_an_outer_transaction_as_sqlalchemy_does(
    db: Database,
) -> None:
    """The recipe for tests that roll back everything: a session bound to a
    connection whose transaction the test began does not commit it."""
    (added,) = await add_tasks(db, task(title="one"))
    async with db.engine.connect() as connection:
        outer = await connection.begin()
        async with db.session_factory()(bind=connection) as session:
            session.add(task(title="inside"))
            await session.commit()
        await outer.rollback()
    assert await titles(db) == {str(added.id): "one"}
