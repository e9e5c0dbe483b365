"""Projects and their worker types."""

from __future__ import annotations

import builtins

from sqlalchemy import select

from orchestrator_db import values
from orchestrator_db.errors import NotFoundError
from orchestrator_db.models.project import Project, WorkerType
from orchestrator_db.repositories.base import Repository, reads
from orchestrator_db.types import sorted_as_text


class ProjectRepository(Repository[Project]):
    model_type = Project
    keyset = ("repository_name",)


class WorkerTypeRepository(Repository[WorkerType]):
    model_type = WorkerType

    @reads
    async def for_project(self, project_id: str) -> builtins.list[WorkerType]:
        """The worker types of a project, by name."""
        project_id = self._value(WorkerType.project_id, project_id, "project_id")
        statement = (
            select(WorkerType)
            .where(WorkerType.project_id == project_id)
            .order_by(sorted_as_text(WorkerType.worker_type))
        )
        return await self._ex.scalars(statement, entity=self.entity)

    @reads
    async def named(self, project_id: str, worker_type: str) -> WorkerType:
        """The worker type ``worker_type`` of a project; NotFoundError if absent."""
        project_id = self._value(WorkerType.project_id, project_id, "project_id")
        worker_type = self._value(WorkerType.worker_type, worker_type, "worker_type")
        statement = select(WorkerType).where(
            WorkerType.project_id == project_id, WorkerType.worker_type == worker_type
        )
        found: builtins.list[WorkerType] = await self._ex.scalars(statement, entity=self.entity)
        if not found:
            raise NotFoundError("WorkerType", (project_id, worker_type))
        return found[0]

    @reads
    async def missing(self, project_id: str, names: builtins.list[str]) -> builtins.list[str]:
        """Those of ``names`` the project does not define, in the order given."""
        project_id = self._value(WorkerType.project_id, project_id, "project_id")
        names = values.texts(names, "names")
        statement = select(WorkerType.worker_type).where(
            WorkerType.project_id == project_id, WorkerType.worker_type.in_(set(names))
        )
        defined = set(await self._ex.scalars(statement, entity=self.entity))
        return [name for name in dict.fromkeys(names) if name not in defined]
