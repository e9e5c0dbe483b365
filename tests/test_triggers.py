"""The updated_at triggers: current on every update, never overriding an
explicit value, and never recursing on SQLite."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from orchestrator_db import Database, UnitOfWork
from orchestrator_db._execution.sqlite import BEGIN_MODE_OPTION
from orchestrator_db.migrations.triggers import updated_at_trigger
from orchestrator_db.types import utc_now
from tests.helpers import add_tasks, task, workflow

LONG_AGO = utc_now() - timedelta(days=30)


async def _age(db: Database, task_id: str) -> None:
    """Put updated_at far in the past, explicitly (the trigger keeps it)."""
    async with db.unit_of_work() as uow:
        aged = await uow.tasks.update(task_id, updated_at=LONG_AGO)
        assert aged.updated_at == LONG_AGO
        await uow.commit()


async def test_updated_at_moves_on_update(db: Database) -> None:
    (added,) = await add_tasks(db, task())
    await _age(db, added.id)
    before = utc_now()
    async with db.unit_of_work() as uow:
        updated = await uow.tasks.update(added.id, title="changed")
        await uow.commit()
    assert updated.updated_at >= before - timedelta(milliseconds=1)
    assert updated.created_at == added.created_at


async def test_raw_sql_updates_are_stamped_too(db: Database) -> None:
    (added,) = await add_tasks(db, task())
    await _age(db, added.id)
    async with db.engine.begin() as connection:
        await connection.execute(
            text("UPDATE tasks SET title = :title WHERE id = :id"),
            {"title": "from SQL", "id": added.id},
        )
    async with db.unit_of_work() as uow:
        loaded = await uow.tasks.get(added.id)
    assert loaded.title == "from SQL"
    assert loaded.updated_at > LONG_AGO + timedelta(days=29)


async def test_an_explicit_updated_at_is_kept(db: Database) -> None:
    (added,) = await add_tasks(db, task())
    chosen = utc_now() - timedelta(hours=3)
    async with db.unit_of_work() as uow:
        updated = await uow.tasks.update(added.id, title="changed", updated_at=chosen)
        await uow.commit()
    async with db.unit_of_work() as uow:
        loaded = await uow.tasks.get(added.id)
    assert updated.updated_at == loaded.updated_at == chosen


async def _create_row(uow: UnitOfWork, table: str) -> tuple[Any, dict[str, Any]]:
    """A fresh row of ``table``; returns its key and a change to apply."""
    if table == "workflows":
        return (await uow.workflows.add(workflow())).id, {"name": "renamed"}
    if table == "sessions":
        return (await uow.sessions.open("c", "http")).id, {"user_id": "someone"}
    return (await uow.configurations.set("k", 1)).key, {"description": "described"}


@pytest.mark.parametrize("table", ["workflows", "sessions", "configurations"])
async def test_every_table_with_updated_at_has_its_trigger(db: Database, table: str) -> None:
    async with db.unit_of_work() as uow:
        key, change = await _create_row(uow, table)
        repository: Any = getattr(uow, table)
        await repository.update(key, updated_at=LONG_AGO)
        await uow.commit()
    async with db.unit_of_work() as uow:
        repository = getattr(uow, table)
        updated = await repository.update(key, **change)
        await uow.commit()
    assert updated.updated_at > LONG_AGO + timedelta(days=29)


CHAINED = (
    "CREATE TRIGGER scratch_chain AFTER UPDATE OF description ON scratch "
    "BEGIN UPDATE scratch SET title = title || '.' WHERE rowid = NEW.rowid; END"
)
UNGUARDED = (
    "CREATE TRIGGER scratch_unguarded AFTER UPDATE ON scratch FOR EACH ROW "
    "WHEN NEW.updated_at IS OLD.updated_at BEGIN "
    "UPDATE scratch SET updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') "
    "WHERE rowid = NEW.rowid; END"
)


async def test_sqlite_trigger_does_not_recurse_with_recursive_triggers_on(
    sqlite_db: Database,
) -> None:
    """A row updated twice in one statement step (here by a chained trigger)
    has updated_at equal to 'now' on the second update: a trigger guarded only
    by "the statement did not set updated_at" recurses without end."""
    guarded = updated_at_trigger("scratch").sqlite
    assert guarded is not None
    async with sqlite_db.engine.connect() as connection:
        raw = await connection.get_raw_connection()
        assert raw.driver_connection is not None
        driver = raw.driver_connection
        await driver.execute("PRAGMA recursive_triggers = ON")
        await driver.execute(
            "CREATE TABLE scratch (id INTEGER PRIMARY KEY, title TEXT, description TEXT, "
            "updated_at TEXT)"
        )
        await driver.execute(
            "INSERT INTO scratch (title, description, updated_at) "
            "VALUES ('t', 'd', '2000-01-01T00:00:00.000Z')"
        )
        await driver.execute(CHAINED)

        await driver.execute(UNGUARDED)
        with pytest.raises(Exception, match="too many levels of trigger recursion"):
            await driver.execute("UPDATE scratch SET description = 'x1'")
        await driver.execute("DROP TRIGGER scratch_unguarded")

        await driver.execute(guarded)
        await driver.execute("UPDATE scratch SET description = 'x2'")
        async with driver.execute("SELECT title, updated_at FROM scratch") as cursor:
            title, stamped = await cursor.fetchone()
        await driver.execute("PRAGMA recursive_triggers = OFF")
        await driver.rollback()
    assert title == "t."  # the unguarded update was rolled back; the guarded one ran
    assert stamped > "2000-01-01T00:00:00.000Z"


async def test_recursive_triggers_on_through_the_package(sqlite_db: Database) -> None:
    (added,) = await add_tasks(sqlite_db, task())
    async with sqlite_db.engine.connect() as connection:
        # No BEGIN: the PRAGMA is ignored inside a transaction.
        await connection.execution_options(**{BEGIN_MODE_OPTION: "NONE"})
        await connection.exec_driver_sql("PRAGMA recursive_triggers = ON")
        for round_ in range(50):  # many land in the same millisecond
            await connection.execute(
                text("UPDATE tasks SET title = :t WHERE id = :id"),
                {"t": str(round_), "id": added.id},
            )
        await connection.commit()
    async with sqlite_db.unit_of_work() as uow:
        assert (await uow.tasks.get(added.id)).title == "49"
