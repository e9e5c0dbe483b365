"""orchestrator_db.testing: the factories and the throwaway database work."""

from __future__ import annotations

from pathlib import Path

from orchestrator_db import Database
from orchestrator_db.testing import (
    ClientSessionFactory,
    ConfigurationFactory,
    TaskFactory,
    ToolExecutionFactory,
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
