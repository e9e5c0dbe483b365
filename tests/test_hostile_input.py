"""Hostile strings are data, never SQL, wherever they enter."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import inspect

from orchestrator_db import Database, TaskStatus
from orchestrator_db.errors import NotFoundError, ValidationError
from tests.helpers import add_tasks, task

HOSTILE = [
    "'; DROP TABLE tasks; --",
    '" OR 1=1 --',
    "Robert'); DROP TABLE workflows;--",
    "%_\\ LIKE wildcards \\%",
    "quote ' and \" and ` backtick",
    "ünïcødé ✓ 🚀",
    ":param $1 ? %s %(name)s",
]


async def _tables(db: Database) -> set[str]:
    async with db.engine.connect() as connection:
        return set(await connection.run_sync(lambda c: inspect(c).get_table_names()))


@pytest.mark.parametrize("evil", HOSTILE)
async def test_hostile_strings_are_stored_and_matched_verbatim(db: Database, evil: str) -> None:
    tables = await _tables(db)
    (added,) = await add_tasks(
        db,
        task(title=evil, task_type=evil, workspace_path=evil, config={evil: [evil]}),
    )
    async with db.unit_of_work() as uow:
        assert [t.id for t in await uow.tasks.list(task_type=evil)] == [added.id]
        assert await uow.tasks.count(title=evil, workspace_path=evil) == 1
        assert await uow.tasks.list(task_type=evil + "x") == []
        loaded = await uow.tasks.get(added.id)
        assert loaded.title == evil
        assert loaded.config == {evil: [evil]}
        await uow.configurations.set(evil, evil, description=evil)
        assert await uow.configurations.get_value(evil) == evil
        await uow.commit()
    assert await _tables(db) == tables


async def test_hostile_keys_and_filter_names(db: Database) -> None:
    evil = "'; DROP TABLE tasks; --"
    async with db.unit_of_work() as uow:
        with pytest.raises(ValidationError, match="must be a UUID"):
            await uow.tasks.get(evil)
        with pytest.raises(ValidationError, match="no attribute or filter"):
            filters: dict[str, Any] = {evil: "x"}
            await uow.tasks.list(**filters)
        with pytest.raises(ValidationError):
            await uow.tasks.update_status(evil, TaskStatus.RUNNING)
        with pytest.raises(NotFoundError):
            await uow.configurations.get(evil)
        with pytest.raises(ValidationError):
            await uow.tasks.page(after=evil)
    assert "tasks" in await _tables(db)


@pytest.mark.parametrize("evil", ["null byte \x00 inside", "lone \ud800 surrogate"])
async def test_text_neither_engine_can_store_is_refused_on_both(db: Database, evil: str) -> None:
    """PostgreSQL cannot store NUL and UTF-8 has no lone surrogates: both
    engines refuse them before SQL, and the unit goes on."""
    async with db.unit_of_work() as uow:
        with pytest.raises(ValidationError, match="title contains"):
            await uow.tasks.add(task(title=evil))
        with pytest.raises(ValidationError, match="config contains"):
            await uow.tasks.add(task(config={"k": evil}))
        with pytest.raises(ValidationError, match="task_type contains"):
            await uow.tasks.list(task_type=evil)
        with pytest.raises(ValidationError, match="value contains"):
            await uow.configurations.set("k", evil)
        kept = await uow.tasks.add(task(title="kept"))
        await uow.commit()
    async with db.unit_of_work() as uow:
        assert [t.id for t in await uow.tasks.list()] == [kept.id]
