"""The package's repositories as attributes (``uow.tasks``, ``db.tasks``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from orchestrator_db.errors import ValidationError
from orchestrator_db.repositories.base import Attribute, Repository
from orchestrator_db.repositories.configuration import ConfigurationRepository
from orchestrator_db.repositories.event import EventRepository
from orchestrator_db.repositories.project import ProjectRepository, WorkerTypeRepository
from orchestrator_db.repositories.session import SessionRepository
from orchestrator_db.repositories.task import TaskRepository
from orchestrator_db.repositories.ticket import CommentRepository, TicketRepository
from orchestrator_db.repositories.tool_execution import ToolExecutionRepository
from orchestrator_db.repositories.worker import WorkerRepository
from orchestrator_db.repositories.workflow import WorkflowRepository

RepositoryT = TypeVar("RepositoryT", bound="Repository[Any]")


class Repositories:
    """Each of the package's repositories as an attribute, made on first use
    by :meth:`repository` (most users of a unit use one or two of them).
    The owner says how it makes one (``_made``): a unit of work's runs on
    its executor, the ``Database``'s are calls."""

    _made: Callable[[type[Repository[Any]]], Any]

    tasks = Attribute(TaskRepository)
    workflows = Attribute(WorkflowRepository)
    tool_executions = Attribute(ToolExecutionRepository)
    sessions = Attribute(SessionRepository)
    configurations = Attribute(ConfigurationRepository)
    projects = Attribute(ProjectRepository)
    worker_types = Attribute(WorkerTypeRepository)
    tickets = Attribute(TicketRepository)
    comments = Attribute(CommentRepository)
    workers = Attribute(WorkerRepository)
    events = Attribute(EventRepository)

    def repository(self, repository: type[RepositoryT]) -> RepositoryT:
        """``repository`` (one of your own, say), as the package's own are here."""
        if not (isinstance(repository, type) and issubclass(repository, Repository)):
            raise ValidationError(
                f"expected a Repository subclass, got {repository!r}", field="repository"
            )
        made: RepositoryT = self._made(repository)
        return made


#: The names of the attributes of :class:`Repositories`.
NAMES = tuple(name for name, value in vars(Repositories).items() if isinstance(value, Attribute))
