"""Small builders shared by the tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
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


async def skip_back_off(db: Database) -> None:
    """Let every task waiting out a retry's back-off be claimable now."""
    from sqlalchemy import update

    async with db.unit_of_work() as uow:
        await uow.session.execute(update(Task).values(run_after=None))
        await uow.commit()


FINISHED = {"completed", "failed", "cancelled"}


def expected_facts(
    statuses: dict[str, str], edges: set[tuple[str, str]]
) -> dict[str, tuple[int, str, int]]:
    """(depth, type, blocking count) of every task, computed the slow and
    obvious way (independently of orchestrator_db.models.graph)."""
    prerequisites: dict[str, list[str]] = {task_id: [] for task_id in statuses}
    for task_id, depends_on in edges:
        prerequisites[task_id].append(depends_on)

    def depth(task_id: str) -> int:
        waited = prerequisites[task_id]
        return 1 + max(depth(p) for p in waited) if waited else 0

    def above(task_id: str, *, unfinished_only: bool) -> set[str]:
        found: set[str] = set()
        stack = list(prerequisites[task_id])
        while stack:
            node = stack.pop()
            if node in found:
                continue
            if unfinished_only and statuses[node] in FINISHED:
                continue  # finished: neither counted nor walked through
            found.add(node)
            stack.extend(prerequisites[node])
        return found

    def kind(task_id: str) -> str:
        waited = prerequisites[task_id]
        if len(waited) < 2:
            return "sequential"
        for p in waited:
            if any(q in above(p, unfinished_only=False) for q in waited if q != p):
                return "sequential"
        return "parallel"

    blocking = dict.fromkeys(statuses, 0)
    for task_id, status in statuses.items():
        if status not in FINISHED:
            for ancestor in above(task_id, unfinished_only=True):
                blocking[ancestor] += 1
    return {t: (depth(t), kind(t), blocking[t]) for t in statuses}


async def assert_facts_hold(db: Database) -> None:
    """Every task's stored depth, type, blocking count and (no deadline)
    calculated priority are what the whole graph says they should be."""
    from orchestrator_db.models import TaskDependency
    from orchestrator_db.models.priority import score_of
    from orchestrator_db.types import utc_now

    async with db.unit_of_work(read_only=True) as uow:
        tasks = {t.id: t for t in await uow.tasks.list()}
        rows = (await uow.session.execute(select_edges(TaskDependency))).all()
    edges = {(str(t), str(p)) for t, p in rows}
    expected = expected_facts({t.id: t.status.value for t in tasks.values()}, edges)
    for task_id, (depth, kind, blocking) in expected.items():
        stored = tasks[task_id]
        found = (stored.dependency_depth, stored.dependency_type.value)
        assert found == (depth, kind), f"{stored.title}: {found} != {(depth, kind)}"
        if stored.status.value not in FINISHED:
            assert stored.blocking_count == blocking, (
                f"{stored.title} blocks {blocking}, stored {stored.blocking_count}"
            )
            if stored.deadline is None and stored.status.value != "running":
                assert stored.calculated_priority == score_of(stored, utc_now())


def select_edges(model: Any) -> Any:
    from sqlalchemy import select

    return select(model.task_id, model.depends_on_id)


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A server that accepts connections and never says a word."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        for writer in held:
            writer.close()
        server.close()
