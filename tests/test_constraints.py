"""Every CHECK, foreign key, unique and NOT NULL constraint is enforced by the
database and reported as the right typed error, with nothing half-written."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select

from orchestrator_db import Configuration, Database, Task, ToolExecution, ValueType
from orchestrator_db.errors import (
    CheckViolationError,
    ConstraintViolationError,
    DuplicateKeyError,
    ForeignKeyViolationError,
    NotNullViolationError,
    TransactionAbortedError,
)
from orchestrator_db.types import new_id
from tests.helpers import add_tasks, raw_insert, task, workflow


def doc() -> str:
    return json.dumps({"k": 1})


CHECK_CASES = [
    (
        "tasks",
        "ck_tasks_status",
        {"title": "t", "task_type": "code", "config": doc(), "status": "bogus"},
    ),
    ("workflows", "ck_workflows_status", {"name": "w", "definition": doc(), "status": "deleted"}),
    ("sessions", "ck_sessions_connection_type", {"client_id": "c", "connection_type": "smtp"}),
    (
        "configurations",
        "ck_configurations_value_type",
        {"key": "k", "value": "v", "value_type": "xml"},
    ),
]


@pytest.mark.parametrize(("table", "constraint", "values"), CHECK_CASES)
async def test_enumerated_checks(
    db: Database, table: str, constraint: str, values: dict[str, Any]
) -> None:
    if table != "configurations":
        values = {"id": new_id(), **values}
    with pytest.raises(CheckViolationError) as raised:
        await raw_insert(db, table, **values)
    assert raised.value.constraint == constraint


async def test_tool_execution_status_check(db: Database) -> None:
    (parent,) = await add_tasks(db, task())
    with pytest.raises(CheckViolationError) as raised:
        await raw_insert(
            db,
            "tool_executions",
            id=new_id(),
            task_id=parent.id,
            tool_name="x",
            arguments=doc(),
            status="exploded",
        )
    assert raised.value.constraint == "ck_tool_executions_status"


async def test_duration_check_through_the_repository(db: Database) -> None:
    (parent,) = await add_tasks(db, task())
    bad = ToolExecution(task_id=parent.id, tool_name="x", arguments={}, duration_ms=-5)
    with pytest.raises(CheckViolationError) as raised:
        async with db.unit_of_work() as uow:
            await uow.tool_executions.add(bad)
    assert raised.value.constraint == "ck_tool_executions_duration_not_negative"
    assert raised.value.entity == "ToolExecution"
    assert raised.value.key == bad.id


async def test_sequence_check_through_the_repository(db: Database) -> None:
    async with db.unit_of_work() as uow:
        wf = await uow.workflows.add(workflow())
        t = await uow.tasks.add(task())
        await uow.commit()
    with pytest.raises(CheckViolationError) as raised:
        async with db.unit_of_work() as uow:
            await uow.workflows.attach_task(wf.id, t.id, sequence=-1)
    assert raised.value.constraint == "ck_workflow_tasks_sequence_not_negative"


@pytest.mark.parametrize(
    ("table", "constraint", "values"),
    [
        (
            "sessions",
            "ck_sessions_is_active",
            {"client_id": "c", "connection_type": "http", "is_active": 2},
        ),
        (
            "configurations",
            "ck_configurations_is_secret",
            {"key": "k", "value": "v", "value_type": "string", "is_secret": 7},
        ),
    ],
)
async def test_boolean_checks_on_sqlite(
    sqlite_db: Database, table: str, constraint: str, values: dict[str, Any]
) -> None:
    """PostgreSQL has a native boolean; SQLite needs the CHECK."""
    if table == "sessions":
        values = {"id": new_id(), **values}
    with pytest.raises(CheckViolationError) as raised:
        await raw_insert(sqlite_db, table, **values)
    assert raised.value.constraint == constraint


async def test_foreign_key_through_raw_sql(db: Database) -> None:
    with pytest.raises(ForeignKeyViolationError) as raised:
        await raw_insert(
            db, "tool_executions", id=new_id(), task_id=new_id(), tool_name="x", arguments=doc()
        )
    if db.dialect == "postgresql":
        assert raised.value.constraint == "fk_tool_executions_task_id_tasks"


async def test_duplicate_primary_keys(db: Database) -> None:
    (first,) = await add_tasks(db, task())
    with pytest.raises(DuplicateKeyError) as raised:
        async with db.unit_of_work() as uow:
            await uow.tasks.add(task(id=first.id))
    assert (raised.value.entity, raised.value.key) == ("Task", first.id)
    assert raised.value.constraint == "pk_tasks"
    async with db.unit_of_work() as uow:
        await uow.configurations.set("dup", 1)
        await uow.commit()
    with pytest.raises(DuplicateKeyError) as raised:
        async with db.unit_of_work() as uow:
            await uow.configurations.add(
                Configuration(key="dup", value="2", value_type=ValueType.INTEGER)
            )
    assert raised.value.constraint == "pk_configurations"


@pytest.mark.parametrize("size", [5, 150])  # 150: PostgreSQL takes the COPY path
async def test_duplicates_in_a_bulk_insert_write_nothing(db: Database, size: int) -> None:
    (first,) = await add_tasks(db, task())
    rows = [task() for _ in range(size)] + [task(id=first.id)]
    with pytest.raises(DuplicateKeyError):
        async with db.unit_of_work() as uow:
            await uow.tasks.add_many(rows)
    async with db.unit_of_work() as uow:
        assert await uow.tasks.count() == 1


@pytest.mark.parametrize("size", [5, 150])
async def test_missing_parents_in_a_bulk_insert_write_nothing(db: Database, size: int) -> None:
    (parent,) = await add_tasks(db, task())
    rows = [ToolExecution(task_id=parent.id, tool_name="x", arguments={}) for _ in range(size)]
    rows.append(ToolExecution(task_id=new_id(), tool_name="x", arguments={}))
    with pytest.raises(ForeignKeyViolationError) as raised:
        async with db.unit_of_work() as uow:
            await uow.tool_executions.add_many(rows)
    assert raised.value.entity == "ToolExecution"
    if db.dialect == "postgresql":
        assert raised.value.constraint == "fk_tool_executions_task_id_tasks"
    async with db.unit_of_work() as uow:
        assert await uow.tool_executions.count() == 0


async def test_not_null(db: Database) -> None:
    with pytest.raises(NotNullViolationError) as raised:
        async with db.unit_of_work() as uow:
            await uow.tasks.add(task(title=None))
    assert raised.value.entity == "Task"
    assert "tasks.title" in str(raised.value)


async def test_a_violation_rolls_back_the_whole_unit(db: Database) -> None:
    kept_out = task(title="written before the failure")
    with pytest.raises(ConstraintViolationError):
        async with db.unit_of_work() as uow:
            await uow.tasks.add(kept_out)
            await uow.tool_executions.start(new_id(), "shell", {})
    async with db.unit_of_work() as uow:
        assert await uow.tasks.count() == 0


async def test_a_caught_violation_fails_the_unit_closed_until_rollback(db: Database) -> None:
    """Both engines behave alike: the failed unit is rolled back at once, and
    refuses everything (commit included) until rollback(): never half a unit."""
    async with db.unit_of_work() as uow:
        await uow.tasks.add(task(title="discarded"))
        with pytest.raises(ForeignKeyViolationError) as violation:
            await uow.tool_executions.start(new_id(), "shell", {})
        assert uow.failure is violation.value
        with pytest.raises(TransactionAbortedError) as aborted:
            await uow.tasks.add(task(title="refused"))
        assert aborted.value.cause is violation.value
        with pytest.raises(TransactionAbortedError):
            await uow.session.execute(select(Task.id))
        with pytest.raises(TransactionAbortedError):
            await uow.commit()
        await uow.rollback()
        assert uow.failure is None
        await uow.tasks.add(task(title="after"))
        await uow.commit()
    async with db.unit_of_work() as uow:
        assert [t.title for t in await uow.tasks.list()] == ["after"]
