"""orchestrator_db.testing: the factories and the throwaway database work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from orchestrator_db import Database
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
    migrated_database,
)


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
