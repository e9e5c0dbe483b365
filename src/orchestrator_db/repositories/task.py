"""Tasks: filters by type, workspace and creation time; a status lifecycle."""

from __future__ import annotations

from orchestrator_db.errors import InvalidTransitionError, ValidationError
from orchestrator_db.models.task import TASK_TRANSITIONS, Task, TaskStatus
from orchestrator_db.repositories.base import Repository
from orchestrator_db.types import utc_now


def parse_task_status(value: TaskStatus | str) -> TaskStatus:
    try:
        return TaskStatus(value)
    except ValueError:
        raise ValidationError(
            f"unknown task status {value!r}; expected one of: "
            f"{', '.join(s.value for s in TaskStatus)}",
            field="status",
        ) from None


class TaskRepository(Repository[Task]):
    model_type = Task
    named_filters = {
        "created_after": lambda value: Task.created_at >= value,
        "created_before": lambda value: Task.created_at < value,
    }
    protected_fields = frozenset({"status", "started_at", "completed_at", "error"})

    async def update_status(
        self, task_id: str, status: TaskStatus | str, *, error: str | None = None
    ) -> Task:
        """Move a task along its lifecycle and stamp the matching timestamp.

        pending -> running sets ``started_at``; running -> completed | failed
        and pending | running -> cancelled set ``completed_at``. ``error`` is
        recorded for failed and cancelled tasks. Anything else raises
        :class:`InvalidTransitionError`. The row is locked while it is checked,
        so two concurrent moves cannot both succeed.
        """
        target = parse_task_status(status)
        if error is not None and target not in (TaskStatus.FAILED, TaskStatus.CANCELLED):
            raise ValidationError("an error can be recorded only when failing or cancelling")
        task = await self.get(task_id, for_update=True)
        if task.status not in TASK_TRANSITIONS.get(target, frozenset()):
            raise InvalidTransitionError(self.entity, task_id, task.status.value, target.value)
        now = utc_now()
        task.status = target
        if target is TaskStatus.RUNNING:
            task.started_at = now
        else:
            task.completed_at = now
            task.error = error
        await self._flush_and_refresh(task, task_id)
        return task
