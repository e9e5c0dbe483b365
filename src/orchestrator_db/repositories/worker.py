"""Workers: registration, lifecycle, liveness; stopping one emits an event."""

from __future__ import annotations

import builtins
from datetime import datetime, timedelta

from sqlalchemy import select

from orchestrator_db import values
from orchestrator_db.errors import InvalidTransitionError, ValidationError
from orchestrator_db.models.event import EventType
from orchestrator_db.models.worker import (
    STOPPED_WORKER_STATUSES,
    WORKER_TRANSITIONS,
    Worker,
    WorkerStatus,
)
from orchestrator_db.repositories.base import Repository, cutoff, reads
from orchestrator_db.repositories.event import EventRepository
from orchestrator_db.repositories.project import WorkerTypeRepository
from orchestrator_db.types import sorted_as_text, utc_now


def _status(value: WorkerStatus | str) -> WorkerStatus:
    return values.member(WorkerStatus, value, "status")


class WorkerRepository(Repository[Worker]):
    model_type = Worker
    keyset = ("started_at", "worker_id")
    protected_fields = frozenset({"status"})

    async def add(self, obj: Worker) -> Worker:
        """Register a worker (``spawning``); its type must exist in its project."""
        self._check_instance(obj)
        await self._sibling(WorkerTypeRepository).named(obj.project_id, obj.worker_type)
        return await super().add(obj)

    async def set_status(
        self, worker_id: str, status: WorkerStatus | str, *, reason: str | None = None
    ) -> Worker:
        """Move a worker along spawning -> active <-> idle -> finished, with
        failed reachable from any live status. Stopping (finished, failed)
        emits a ``worker_stopped`` event with ``reason`` in the same
        transaction. Illegal moves raise :class:`InvalidTransitionError`."""
        target = _status(status)
        if reason is not None:
            values.text(reason, "reason")
        worker = await self.get(worker_id, for_update=True)
        if worker.status not in WORKER_TRANSITIONS.get(target, frozenset()):
            raise InvalidTransitionError(self.entity, worker_id, worker.status.value, target.value)
        worker.status = target
        worker.last_activity = utc_now()
        await self._flush_and_refresh(worker, worker_id)
        if target in STOPPED_WORKER_STATUSES:
            await self._sibling(EventRepository).emit(
                EventType.WORKER_STOPPED,
                project_id=worker.project_id,
                worker_id=worker.worker_id,
                reason=reason or target.value,
            )
        return worker

    async def stop(
        self, worker_id: str, *, failed: bool = False, reason: str | None = None
    ) -> Worker:
        """Stop a worker: ``finished``, or ``failed``; emits ``worker_stopped``."""
        target = WorkerStatus.FAILED if values.boolean(failed, "failed") else WorkerStatus.FINISHED
        return await self.set_status(worker_id, target, reason=reason)

    async def touch(self, worker_id: str) -> Worker:
        """Record activity now. A stopped worker cannot report activity."""
        worker = await self.get(worker_id, for_update=True)
        if worker.status in STOPPED_WORKER_STATUSES:
            raise InvalidTransitionError(self.entity, worker_id, worker.status.value, "active")
        worker.last_activity = utc_now()
        await self._flush_and_refresh(worker, worker_id)
        return worker

    @reads
    async def stale(self, older_than: timedelta | datetime) -> builtins.list[Worker]:
        """Live workers (spawning, active, idle) silent since ``older_than``
        (an age or an instant), least recently active first."""
        since = cutoff(older_than)
        statement = (
            select(Worker)
            .where(
                Worker.status.not_in([s.value for s in STOPPED_WORKER_STATUSES]),
                Worker.last_activity < since,
            )
            .order_by(Worker.last_activity, sorted_as_text(Worker.worker_id))
        )
        return await self._ex.scalars(statement, entity=self.entity)

    @reads
    async def for_project(
        self, project_id: str, *, status: WorkerStatus | str | None = None
    ) -> builtins.list[Worker]:
        if project_id is None:
            raise ValidationError("project_id is required", field="project_id")
        if status is None:
            return await self.list(project_id=project_id)
        return await self.list(project_id=project_id, status=_status(status))
