"""orchestrator_db.testing: the factories and the throwaway database work."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text

from orchestrator_db import Database, Task
from orchestrator_db.errors import DataLayerError, ValidationError
from orchestrator_db.models import (
    Comment,
    Event,
    TaskDependency,
    Ticket,
    ToolExecution,
    Worker,
    WorkflowTask,
)
from orchestrator_db.testing import (
    ClientSessionFactory,
    CommentFactory,
    ConfigurationFactory,
    EventFactory,
    ProjectFactory,
    TaskFactory,
    TicketFactory,
    ToolExecutionFactory,
    WorkerFactory,
    WorkerTypeFactory,
    WorkflowFactory,
    WorkflowTaskFactory,
    create,
    create_batch,
    migrated_database,
)
from orchestrator_db.testing.database import Baseline, migrate
from tests import pg
from tests.helpers import add_tasks, task


async def test_every_factory_builds_rows_the_database_accepts(db: Database) -> None:
    async with db.unit_of_work() as uow:
        tasks = await uow.tasks.add_many(TaskFactory.build_batch(20))
        workflow = await uow.workflows.add(WorkflowFactory())
        for position, task in enumerate(tasks[:3]):
            link = WorkflowTaskFactory(workflow_id=workflow.id, task_id=task.id, sequence=position)
            await uow.workflows.attach_task(link.workflow_id, link.task_id, sequence=link.sequence)
        await uow.tool_executions.add_many(ToolExecutionFactory.build_batch(5, task_id=tasks[0].id))
        await uow.sessions.add_many(ClientSessionFactory.build_batch(3))
        await uow.configurations.add(ConfigurationFactory())
        await uow.commit()
    async with db.unit_of_work(read_only=True) as uow:
        assert await uow.tasks.count() == 20
        assert len(await uow.workflows.tasks_of(workflow.id)) == 3
        assert await uow.tool_executions.count(task_id=tasks[0].id) == 5
        assert len(await uow.sessions.list_active()) == 3
        assert await uow.configurations.count() == 1
    assert len({t.task_type for t in tasks}) == 3


async def test_the_pipeline_factories_build_rows_the_database_accepts(db: Database) -> None:
    async with db.unit_of_work() as uow:
        project = await uow.projects.add(ProjectFactory())
        types = await uow.worker_types.add_many(
            WorkerTypeFactory.build_batch(3, project_id=project.repository_name)
        )
        plan = [t.worker_type for t in types]
        tickets = await uow.tickets.add_many(
            TicketFactory.build_batch(4, project_id=project.repository_name, execution_plan=plan)
        )
        await uow.comments.add_many(CommentFactory.build_batch(2, ticket_id=tickets[0].ticket_id))
        workers = await uow.workers.add_many(
            WorkerFactory.build_batch(2, project_id=project.repository_name)
        )
        await uow.events.add(
            EventFactory(project_id=project.repository_name, ticket_id=tickets[0].ticket_id)
        )
        await uow.commit()
    async with db.unit_of_work(read_only=True) as uow:
        assert sorted(plan) == ["coder", "planner", "reviewer"]
        assert await uow.tickets.count(project_id=project.repository_name) == 4
        assert len(await uow.comments.for_ticket(tickets[0].ticket_id)) == 2
        assert len(await uow.workers.for_project(project.repository_name)) == len(workers) == 2
        assert await uow.events.count(processed=False) == 1


async def test_migrated_database_is_ready_and_removed() -> None:
    async with migrated_database() as db:
        report = await db.health_check()
        assert report.up_to_date
        path = db.url.database
        assert path is not None
        async with db.unit_of_work() as uow:
            await uow.tasks.add(TaskFactory())
            await uow.commit()
    assert not Path(path).exists()


def test_the_database_helper_needs_no_factory_boy() -> None:
    """``migrated_database`` imports without factory-boy; the factories load
    when first asked for."""
    code = (
        "import sys; sys.modules['factory'] = None\n"
        "from orchestrator_db.testing import migrated_database\n"
        "import orchestrator_db.testing as t\n"
        "try:\n"
        "    t.TaskFactory\n"
        "except ImportError:\n"
        "    print('factories need factory-boy')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "factories need factory-boy"


async def test_create_makes_the_rows_an_object_needs(db: Database) -> None:
    """Each model from nothing but its factory: the project, worker types,
    ticket, task and workflow it refers to are made and stored with it."""
    async with db.unit_of_work() as uow:
        ticket = await create(uow, Ticket, execution_plan=["planner", "coder"])
        worker = await create(uow, Worker, worker_type="reviewer")
        comment = await create(uow, Comment)
        about_ticket = await create(uow, Event, ticket_id=ticket.ticket_id)
        about_worker = await create(uow, Event, worker_id=worker.worker_id)
        executions = await create_batch(uow, ToolExecution, 2)
        link = await create(uow, WorkflowTask)
        configured = await create(uow, ConfigurationFactory, key="from.a.factory")
        await uow.commit()
    async with db.unit_of_work(read_only=True) as uow:
        assert await uow.worker_types.missing(ticket.project_id, ["planner", "coder"]) == []
        assert await uow.worker_types.missing(worker.project_id, ["reviewer"]) == []
        assert (await uow.tickets.get(comment.ticket_id)).ticket_id == comment.ticket_id
        assert about_ticket.project_id == ticket.project_id
        assert about_worker.project_id == worker.project_id
        assert len({e.task_id for e in executions}) == 2
        assert await uow.tasks.count() == 3  # two executions' and the link's
        assert [t.id for t in await uow.workflows.tasks_of(link.workflow_id)] == [link.task_id]
        assert (await uow.configurations.get("from.a.factory")).key == configured.key
        assert await uow.projects.count() == 3  # ticket's, worker's, comment's ticket's


async def test_create_refuses_what_its_repository_refuses(db: Database) -> None:
    async with db.unit_of_work() as uow:
        with pytest.raises(ValidationError):
            await create(uow, Task, title="\x00")
        assert await uow.tasks.count() == 0


async def test_a_baseline_outlives_its_connection(postgres_database_url: str) -> None:
    """The restore's kept connection, ended by the server (a restart, an
    administrator), is replaced: the next restore works."""
    baseline = await Baseline.capture(postgres_database_url)
    db = Database(postgres_database_url)
    try:
        await baseline.restore()  # its connection, now idle in its pool
        async with db.engine.begin() as connection:
            ended = await connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
            assert (True,) in ended.all()
        await add_tasks(db, task())
        await baseline.restore()
        async with db.unit_of_work(read_only=True) as uow:
            assert await uow.tasks.count() == 0
    finally:
        await db.close()
        await baseline.close()


# ------------------------------------------------- Baseline: what a restore keeps


@pytest.fixture
async def scratch_pg(postgres_database_url: str) -> AsyncIterator[str]:
    """A migrated PostgreSQL database of the test's own, to add to."""
    name = f"odb_baseline_{os.getpid()}_{secrets.token_hex(3)}"
    url = await asyncio.to_thread(pg.create_database, name)
    await migrate(url)
    yield url
    await asyncio.to_thread(pg.drop_database, name)


async def _sql(url: str, *statements: str) -> list[Any]:
    connection = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        for statement in statements[:-1]:
            await connection.execute(statement)
        return list(await connection.fetch(statements[-1]))
    finally:
        await connection.close()


async def test_seed_rows_come_back_whole_in_any_order(scratch_pg: str) -> None:
    """A child seeded before its parent was last written (the physical
    order), SQL NULL in a JSON column, a DELETE trigger of the project's:
    the rows come back as they were, and the trigger does not run."""
    db = Database(scratch_pg)
    async with db.unit_of_work() as uow:
        parent = await create(uow, Task, metadata_=None)
        child = await create(uow, Task, parent_task_id=parent.id)
        await uow.commit()
    async with db.unit_of_work() as uow:
        await uow.tasks.update(parent.id, title="touched")  # the parent moves behind
        await uow.commit()
    await db.close()
    await _sql(
        scratch_pg,
        "CREATE TABLE history (what text)",
        "CREATE FUNCTION remember() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN INSERT INTO history VALUES (TG_OP); RETURN OLD; END $$",
        "CREATE TRIGGER remembered AFTER DELETE ON tasks FOR EACH ROW EXECUTE FUNCTION remember()",
        "SELECT 1",
    )
    baseline = await Baseline.capture(scratch_pg)
    try:
        assert baseline.possible, baseline.why
        seeded = "SELECT id, parent_task_id, metadata IS NULL AS null FROM tasks ORDER BY id"
        before = await _sql(scratch_pg, seeded)
        await _sql(
            scratch_pg, "DELETE FROM tasks", "INSERT INTO history VALUES ('test')", "SELECT 1"
        )
        await baseline.restore()
        assert await _sql(scratch_pg, seeded) == before
        assert [r["null"] for r in before] == [True, True] and child.parent_task_id == parent.id
        assert await _sql(scratch_pg, "SELECT what FROM history") == []
    finally:
        await baseline.close()


async def test_a_session_left_in_a_transaction_does_not_stop_a_restore(scratch_pg: str) -> None:
    baseline = await Baseline.capture(scratch_pg)
    await add_tasks(db := Database(scratch_pg), task())
    await db.close()
    left_open = await asyncpg.connect(scratch_pg.replace("+asyncpg", ""))
    try:
        await left_open.execute("BEGIN")
        await left_open.execute("UPDATE tasks SET title = 'mine'")  # its row locked
        await baseline.restore()  # ends the session after lock_timeout, then restores
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError)):
            await left_open.fetch("SELECT 1")  # it was ended
    finally:
        await left_open.close()
        await baseline.close()


@pytest.mark.parametrize(
    "setup",
    [
        "CREATE SCHEMA app; CREATE TABLE app.deployments (id serial PRIMARY KEY)",
        "CREATE TABLE audit (at date) PARTITION BY RANGE (at); "
        "CREATE TABLE audit_2024 PARTITION OF audit "
        "FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')",
        "CREATE TABLE base_log (line text); CREATE TABLE child_log () INHERITS (base_log)",
        "CREATE TABLE a (id int PRIMARY KEY, b int); CREATE TABLE b (id int PRIMARY KEY, "
        "a int REFERENCES a); ALTER TABLE a ADD FOREIGN KEY (b) REFERENCES b",
    ],
    ids=["other-schema", "partitioned", "inherited", "cycle"],
)
async def test_what_a_restore_cannot_keep_is_copied_instead(scratch_pg: str, setup: str) -> None:
    await _sql(scratch_pg, setup, "SELECT 1")
    baseline = await Baseline.capture(scratch_pg)
    await baseline.close()
    if "REFERENCES a" in setup:  # a superuser restores cycles with checks off
        assert baseline.possible
    else:
        assert not baseline.possible and baseline.why


@pytest.mark.parametrize(
    ("model", "fields"),
    [
        (TaskDependency, {}),
        ("Task", {}),
        (Task, {"colour": "red"}),
        (Ticket, {"execution_plan": None}),
        (Ticket, {"execution_plan": "coder"}),
        (Ticket, {"project_id": "nope/nope"}),
        (Worker, {"worker_type": 7}),
    ],
    ids=[
        "not-ours",
        "a-string",
        "unknown-field",
        "no-plan",
        "plan-string",
        "no-project",
        "bad-type",
    ],
)
async def test_create_refuses_with_typed_errors(db: Database, model: Any, fields: Any) -> None:
    async with db.unit_of_work() as uow:
        with pytest.raises(DataLayerError):
            await create(uow, model, **fields)
        assert await uow.worker_types.count() == 0
