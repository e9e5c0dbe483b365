"""Workflows and the ordered membership of tasks in them."""

from __future__ import annotations

import builtins

from sqlalchemy import select

from orchestrator_db import values
from orchestrator_db.models.task import Task
from orchestrator_db.models.workflow import Workflow, WorkflowTask
from orchestrator_db.repositories.base import Repository, reads


class WorkflowTaskRepository(Repository[WorkflowTask]):
    """Membership rows; reached through :class:`WorkflowRepository`."""

    model_type = WorkflowTask


class WorkflowRepository(Repository[Workflow]):
    model_type = Workflow

    async def attach_task(
        self, workflow_id: str, task_id: str, *, sequence: int = 0
    ) -> WorkflowTask:
        """Put a task in a workflow at ``sequence`` (0 first; ties run in parallel)."""
        values.integer(sequence, "sequence")
        links = self._sibling(WorkflowTaskRepository)
        return await links.add(
            WorkflowTask(workflow_id=workflow_id, task_id=task_id, sequence=sequence)
        )

    async def detach_task(self, workflow_id: str, task_id: str) -> bool:
        """Remove a task from a workflow; ``False`` if it was not in it."""
        return await self._sibling(WorkflowTaskRepository).delete((workflow_id, task_id))

    @reads
    async def tasks_of(self, workflow_id: str) -> builtins.list[Task]:
        """The workflow's tasks in execution order (sequence, then when added)."""
        workflow_id = self._value(WorkflowTask.workflow_id, workflow_id, "workflow_id")
        statement = (
            select(Task)
            .join(WorkflowTask, WorkflowTask.task_id == Task.id)
            .where(WorkflowTask.workflow_id == workflow_id)
            .order_by(WorkflowTask.sequence, WorkflowTask.created_at, Task.id)
        )
        return await self._ex.scalars(statement, entity=self.entity)
