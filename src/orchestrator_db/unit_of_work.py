"""The unit of work: one transaction, with the repositories as attributes.

Nothing is saved unless :meth:`UnitOfWork.commit` is called; leaving the
``async with`` block rolls back whatever was not committed, and an error
raised inside the block rolls the whole unit back.
"""

from __future__ import annotations

from types import TracebackType
from typing import NoReturn, Protocol, Self

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from orchestrator_db.error_translation import translate
from orchestrator_db.repositories.configuration import ConfigurationRepository
from orchestrator_db.repositories.event import EventRepository
from orchestrator_db.repositories.project import ProjectRepository, WorkerTypeRepository
from orchestrator_db.repositories.session import SessionRepository
from orchestrator_db.repositories.task import TaskRepository
from orchestrator_db.repositories.ticket import CommentRepository, TicketRepository
from orchestrator_db.repositories.tool_execution import ToolExecutionRepository
from orchestrator_db.repositories.worker import WorkerRepository
from orchestrator_db.repositories.workflow import WorkflowRepository
from orchestrator_db.unit_connection import OwnConnection, holds_no_connection


class AbstractUnitOfWork(Protocol):
    """What service code depends on; satisfied by :class:`UnitOfWork`."""

    tasks: TaskRepository
    workflows: WorkflowRepository
    tool_executions: ToolExecutionRepository
    sessions: SessionRepository
    configurations: ConfigurationRepository
    projects: ProjectRepository
    worker_types: WorkerTypeRepository
    tickets: TicketRepository
    comments: CommentRepository
    workers: WorkerRepository
    events: EventRepository

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...


class UnitOfWork(AbstractUnitOfWork):
    """A transaction with typed repositories.

    Obtain one from :meth:`orchestrator_db.Database.unit_of_work`::

        async with db.unit_of_work() as uow:
            task = await uow.tasks.add(Task(title="Build", task_type="code", config={}))
            await uow.commit()

    ``session`` is the underlying :class:`~sqlalchemy.ext.asyncio.AsyncSession`,
    for queries the repositories do not offer; errors raised through it are
    translated when they leave the block.
    """

    # The repository attributes are declared once, on AbstractUnitOfWork.
    session: AsyncSession

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        *,
        autocommit_engine: AsyncEngine | None = None,
    ) -> None:
        """``autocommit_engine``: the engine, in autocommit, of a unit whose
        statements each commit on their own; such a unit checks its connection
        out itself (see :mod:`orchestrator_db.unit_connection`)."""
        self._session_factory = session_factory
        self._autocommit_engine = autocommit_engine
        self._own_connection: OwnConnection | None = None

    async def __aenter__(self) -> Self:
        self.session = session = self._session_factory()
        if self._autocommit_engine is not None:
            self._own_connection = OwnConnection(self._autocommit_engine, session)
        self.tasks = TaskRepository(session)
        self.workflows = WorkflowRepository(session)
        self.tool_executions = ToolExecutionRepository(session)
        self.sessions = SessionRepository(session)
        self.configurations = ConfigurationRepository(session)
        self.projects = ProjectRepository(session)
        self.worker_types = WorkerTypeRepository(session)
        self.tickets = TicketRepository(session)
        self.comments = CommentRepository(session)
        self.workers = WorkerRepository(session)
        self.events = EventRepository(session)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # close() rolls back whatever was not committed. Unlike rollback(), it
        # detaches objects without expiring them, so they stay readable.
        try:
            if holds_no_connection(self.session):
                self.session.sync_session.close()
            else:
                await self.session.close()
        finally:
            if self._own_connection is not None:
                await self._own_connection.release()
                self._own_connection = None
        if isinstance(exc, SQLAlchemyError):
            translated = translate(exc)
            if translated is not None:
                raise translated from exc

    async def commit(self) -> None:
        """Make everything done in this unit of work permanent."""
        try:
            await self.session.commit()
        except SQLAlchemyError as error:
            await self._fail(error)

    async def rollback(self) -> None:
        """Discard everything done since the last commit."""
        await self.session.rollback()

    async def flush(self) -> None:
        """Send pending changes to the database without committing them."""
        try:
            await self.session.flush()
        except SQLAlchemyError as error:
            await self._fail(error)

    async def _fail(self, error: SQLAlchemyError) -> NoReturn:
        translated = translate(error)
        await self.session.rollback()
        if translated is None:
            raise error
        raise translated from error
