"""The README quickstart, as a test."""

from __future__ import annotations

from orchestrator_db import Database, Task, TaskStatus, Workflow


async def test_quickstart_flow(db: Database) -> None:
    async with db.unit_of_work() as uow:
        task = await uow.tasks.add(Task(title="Build", task_type="code", config={"lang": "py"}))
        wf = await uow.workflows.add(Workflow(name="release", definition={"steps": []}))
        await uow.workflows.attach_task(wf.id, task.id, sequence=0)
        await uow.commit()
    async with db.unit_of_work() as uow:
        loaded = await uow.tasks.get(task.id)
        assert loaded.title == "Build"
        assert loaded.config == {"lang": "py"}
        assert [t.id for t in await uow.workflows.tasks_of(wf.id)] == [task.id]
        moved = await uow.tasks.update_status(task.id, TaskStatus.RUNNING)
        assert moved.started_at is not None
        assert await uow.tasks.delete(task.id) is True
        await uow.commit()
    async with db.unit_of_work() as uow:
        assert await uow.tasks.get_or_none(task.id) is None
        assert await uow.workflows.tasks_of(wf.id) == []
