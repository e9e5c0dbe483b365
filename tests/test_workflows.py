"""WorkflowRepository: membership of tasks, order, filters and cascades."""

from __future__ import annotations

import pytest

from orchestrator_db import Database, WorkflowStatus
from orchestrator_db.errors import DuplicateKeyError, ForeignKeyViolationError
from orchestrator_db.types import new_id
from tests.helpers import task, workflow


async def test_tasks_of_follows_sequence(db: Database) -> None:
    async with db.unit_of_work() as uow:
        wf = await uow.workflows.add(workflow())
        a, b, c = [await uow.tasks.add(task(title=t)) for t in "abc"]
        await uow.workflows.attach_task(wf.id, c.id, sequence=0)
        await uow.workflows.attach_task(wf.id, a.id, sequence=2)
        link = await uow.workflows.attach_task(wf.id, b.id, sequence=1)
        assert (link.workflow_id, link.task_id, link.sequence) == (wf.id, b.id, 1)
        await uow.commit()
    async with db.unit_of_work() as uow:
        assert [t.title for t in await uow.workflows.tasks_of(wf.id)] == ["c", "b", "a"]
        assert await uow.workflows.detach_task(wf.id, b.id) is True
        assert await uow.workflows.detach_task(wf.id, b.id) is False
        assert [t.title for t in await uow.workflows.tasks_of(wf.id)] == ["c", "a"]
        assert await uow.workflows.tasks_of(new_id()) == []


async def test_attaching_twice_is_a_duplicate(db: Database) -> None:
    async with db.unit_of_work() as uow:
        wf = await uow.workflows.add(workflow())
        t = await uow.tasks.add(task())
        await uow.workflows.attach_task(wf.id, t.id)
        await uow.commit()
    with pytest.raises(DuplicateKeyError) as raised:
        async with db.unit_of_work() as uow:
            await uow.workflows.attach_task(wf.id, t.id, sequence=5)
    assert raised.value.entity == "WorkflowTask"
    assert raised.value.key == (wf.id, t.id)
    assert raised.value.constraint == "pk_workflow_tasks"


@pytest.mark.parametrize("missing", ["workflow", "task"])
async def test_attaching_something_missing_names_the_foreign_key(
    db: Database, missing: str
) -> None:
    async with db.unit_of_work() as uow:
        wf = await uow.workflows.add(workflow())
        t = await uow.tasks.add(task())
        await uow.commit()
    workflow_id = new_id() if missing == "workflow" else wf.id
    task_id = new_id() if missing == "task" else t.id
    with pytest.raises(ForeignKeyViolationError) as raised:
        async with db.unit_of_work() as uow:
            await uow.workflows.attach_task(workflow_id, task_id)
    expected = {
        "workflow": "fk_workflow_tasks_workflow_id_workflows",
        "task": "fk_workflow_tasks_task_id_tasks",
    }[missing]
    assert raised.value.constraint == expected
    assert raised.value.entity == "WorkflowTask"


async def test_filters_by_status_and_name(db: Database) -> None:
    async with db.unit_of_work() as uow:
        await uow.workflows.add(workflow(name="nightly", status=WorkflowStatus.ACTIVE))
        await uow.workflows.add(workflow(name="release"))
        await uow.workflows.add(workflow(name="nightly"))
        await uow.commit()
    async with db.unit_of_work() as uow:
        assert await uow.workflows.count(name="nightly") == 2
        active = await uow.workflows.list(status=WorkflowStatus.ACTIVE)
        assert [w.name for w in active] == ["nightly"]
        assert await uow.workflows.count(status=WorkflowStatus.DRAFT, name="release") == 1


async def test_deleting_either_side_removes_the_membership_only(db: Database) -> None:
    async with db.unit_of_work() as uow:
        wf = await uow.workflows.add(workflow())
        kept = await uow.tasks.add(task(title="kept"))
        gone = await uow.tasks.add(task(title="gone"))
        await uow.workflows.attach_task(wf.id, kept.id)
        await uow.workflows.attach_task(wf.id, gone.id)
        await uow.commit()
    async with db.unit_of_work() as uow:
        await uow.tasks.delete(gone.id)
        await uow.commit()
    async with db.unit_of_work() as uow:
        assert [t.title for t in await uow.workflows.tasks_of(wf.id)] == ["kept"]
        await uow.workflows.delete(wf.id)
        await uow.commit()
    async with db.unit_of_work() as uow:
        assert await uow.tasks.exists(id=kept.id)
        assert await uow.workflows.tasks_of(wf.id) == []
