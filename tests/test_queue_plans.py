"""The queue's statements are index lookups: EXPLAIN QUERY PLAN on SQLite,
EXPLAIN on PostgreSQL (after ANALYZE, with most tasks finished, as in a
long-running orchestrator)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event, insert

from orchestrator_db import Database, Task, TaskStatus, work_queue
from orchestrator_db.models import TaskDependency
from orchestrator_db.sql import graph
from orchestrator_db.sql import queue as q
from orchestrator_db.types import new_id, utc_now

FINISHED = 3_000
QUEUED = 30


async def populate(db: Database) -> None:
    tasks = [
        Task(title="old", task_type="code", config={}, status=TaskStatus.COMPLETED)
        for _ in range(FINISHED)
    ]
    edges = [
        {"task_id": tasks[i].id, "depends_on_id": tasks[i - 1].id, "created_at": utc_now()}
        for i in range(1, FINISHED)
    ]
    async with db.unit_of_work() as uow:
        await uow.tasks.add_many(tasks)
        await uow.session.execute(insert(TaskDependency), edges)
        await uow.tasks.submit_many(
            [
                Task(title="new", task_type="code" if i % 2 else "review", config={})
                for i in range(QUEUED)
            ]
        )
        await uow.commit()
    async with db.engine.connect() as connection:
        await connection.execution_options(orchestrator_db_begin="NONE")
        await connection.exec_driver_sql("ANALYZE")


async def plan(db: Database, statement: Any, **params: Any) -> str:
    """The engine's plan for ``statement``, run as SQLAlchemy runs it (same
    SQL, same bound parameters) with EXPLAIN put in front; nothing executes."""
    prefix = "EXPLAIN QUERY PLAN " if db.dialect == "sqlite" else "EXPLAIN "
    captured: list[Any] = []

    def explain(conn: Any, cursor: Any, sql: str, parameters: Any, *args: Any) -> Any:
        return prefix + sql, parameters

    def capture(conn: Any, cursor: Any, *args: Any) -> None:
        captured.extend(cursor.fetchall())

    engine = db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", explain, retval=True)
    event.listen(engine, "after_cursor_execute", capture)
    try:
        async with db.engine.connect() as connection:
            await connection.execute(getattr(statement, "element", statement), params)
            await connection.rollback()
    finally:
        event.remove(engine, "before_cursor_execute", explain)
        event.remove(engine, "after_cursor_execute", capture)
    return "\n".join(" ".join(str(c) for c in row) for row in captured)


@pytest.fixture
async def queued_db(own_db: Database) -> Database:
    """A database of the test's own: a plan depends on the tables' physical
    state too, which emptying a shared database leaves behind."""
    await populate(own_db)
    return own_db


async def test_the_claim_reads_the_partial_claim_index(queued_db: Database) -> None:
    statement = q.claim_statement(queued_db.dialect, typed=0)
    text = await plan(queued_db, statement, holder="w", lease_seconds=60.0, lease_cap=60.0, limit=1)
    assert "idx_tasks_claim" in text, text
    assert "TEMP B-TREE" not in text
    assert "Sort" not in text
    # Whether a lease ran out, asked of every claimed row: the lease index.
    assert "idx_tasks_lease" in text, text
    assert "Seq Scan on tasks expired" not in text


@pytest.mark.parametrize("types", [["review"], ["code", "review"]], ids=["one", "several"])
async def test_a_typed_claim_reads_the_typed_claim_index(
    queued_db: Database, types: list[str]
) -> None:
    statement = q.claim_statement(queued_db.dialect, typed=q.type_count(types))
    text = await plan(
        queued_db,
        statement,
        holder="w",
        lease_seconds=60.0,
        lease_cap=60.0,
        limit=1,
        task_types=work_queue.bound_filters({"task_types": types})["task_types"],
    )
    assert "idx_tasks_claim_type" in text, text
    if len(types) == 1:
        # The type's index gives claim order: no sort of its ready tasks.
        assert "TEMP B-TREE" not in text
        assert "Sort" not in text


async def test_the_rescue_reads_the_lease_index(queued_db: Database) -> None:
    statement = q.rescue_statement(queued_db.dialect)
    text = await plan(queued_db, statement, limit=100, message="timed out")
    assert "idx_tasks_lease" in text, text
    assert "SCAN tasks\n" not in text + "\n"
    assert "Seq Scan on tasks" not in text


async def test_release_finds_dependents_through_the_edge_index(queued_db: Database) -> None:
    text = await plan(queued_db, q.release_statement(through_edges=True), ids=[new_id(), new_id()])
    assert "idx_task_dependencies_depends_on" in text or "pk_task_dependencies" in text, text
    assert "Seq Scan on tasks" not in text


async def test_the_one_task_release_finds_dependents_through_the_edge_index(
    queued_db: Database,
) -> None:
    statement = q.release_statement(through_edges=True, single=True)
    text = await plan(queued_db, statement, one_id=new_id())
    assert "idx_task_dependencies_depends_on" in text or "pk_task_dependencies" in text, text
    assert "Seq Scan on tasks" not in text


async def test_reprioritize_seeks_the_due_scores(queued_db: Database) -> None:
    text = await plan(queued_db, graph.due_statement(), limit=100, now=utc_now())
    assert "idx_tasks_reprioritize" in text, text
    # Compared with the bound clock in the index, not filtered row by row.
    assert "Filter: (reprioritize_at" not in text, text
    assert "TEMP B-TREE" not in text


async def test_a_claim_asks_about_expired_leases_with_an_index_seek(queued_db: Database) -> None:
    statement = q.claim_statement(queued_db.dialect, typed=0)
    text = await plan(queued_db, statement, holder="w", lease_seconds=60.0, lease_cap=60.0, limit=1)
    if queued_db.dialect == "sqlite":
        assert "idx_tasks_lease (lease_expires_at<?)" in text, text
    else:
        assert "Index Cond: (lease_expires_at <" in text, text


async def test_overdue_reads_the_deadline_index(queued_db: Database) -> None:
    text = await plan(queued_db, q.overdue_statement(), limit=100)
    assert "idx_tasks_deadline" in text, text
    assert "Seq Scan on tasks" not in text
