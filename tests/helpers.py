"""Small builders shared by the tests."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from orchestrator_db import Database, Task, Workflow
from orchestrator_db.models import ClientSession, ConnectionType


def task(**overrides: Any) -> Task:
    values: dict[str, Any] = {"title": "a task", "task_type": "code", "config": {"k": 1}}
    values.update(overrides)
    return Task(**values)


def workflow(**overrides: Any) -> Workflow:
    values: dict[str, Any] = {"name": "a workflow", "definition": {"steps": []}}
    values.update(overrides)
    return Workflow(**values)


def client_session(**overrides: Any) -> ClientSession:
    values: dict[str, Any] = {"client_id": "client", "connection_type": ConnectionType.HTTP}
    values.update(overrides)
    return ClientSession(**values)


async def add_tasks(db: Database, *tasks: Task) -> list[Task]:
    async with db.unit_of_work() as uow:
        added = [await uow.tasks.add(t) for t in tasks]
        await uow.commit()
    return added


async def raw_insert(db: Database, table: str, **values: Any) -> None:
    """Insert through SQL text, bypassing every Python-side check. Table and
    column names come from the test itself; values are bound parameters."""
    columns = ", ".join(values)
    placeholders = ", ".join(f":{name}" for name in values)
    async with db.unit_of_work() as uow:
        await uow.session.execute(
            text(f"INSERT INTO {table} ({columns}) VALUES ({placeholders})"), values
        )
        await uow.commit()
