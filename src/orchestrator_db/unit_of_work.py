"""The unit of work: one transaction, with the repositories as attributes.

Nothing is saved unless :meth:`UnitOfWork.commit` is called; leaving the
``async with`` block rolls back whatever was not committed. A unit fails
closed: once a statement of it has failed, it is rolled back, and every later
operation and ``commit()`` raise
:class:`~orchestrator_db.errors.TransactionAbortedError` until
:meth:`UnitOfWork.rollback` (so half a unit is never committed). A
:class:`~orchestrator_db.errors.ValidationError`, raised before anything is
sent, leaves the unit as it was.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from orchestrator_db._execution.backend import Backend, cause_of
from orchestrator_db._execution.errors import Boundary, translate
from orchestrator_db._execution.executor import UnitExecutor, UnitSession
from orchestrator_db._execution.observe import Observer
from orchestrator_db._execution.signals import Signals
from orchestrator_db._execution.transaction import NeedsTransaction
from orchestrator_db.errors import DataLayerError, TransactionAbortedError, ValidationError
from orchestrator_db.repositories.attributes import NAMES, Repositories
from orchestrator_db.repositories.base import Repository
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


class AbstractUnitOfWork(Protocol):
    """What service code depends on; satisfied by :class:`UnitOfWork`."""

    @property
    def tasks(self) -> TaskRepository: ...

    @property
    def workflows(self) -> WorkflowRepository: ...

    @property
    def tool_executions(self) -> ToolExecutionRepository: ...

    @property
    def sessions(self) -> SessionRepository: ...

    @property
    def configurations(self) -> ConfigurationRepository: ...

    @property
    def projects(self) -> ProjectRepository: ...

    @property
    def worker_types(self) -> WorkerTypeRepository: ...

    @property
    def tickets(self) -> TicketRepository: ...

    @property
    def comments(self) -> CommentRepository: ...

    @property
    def workers(self) -> WorkerRepository: ...

    @property
    def events(self) -> EventRepository: ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...


@dataclass(frozen=True)
class Route:
    """Where a unit's statements go: the sessions it opens, the engine of
    units in autocommit (see :class:`~orchestrator_db._execution.transaction.OwnConnection`),
    and who is told how the unit ended (a replica's bookkeeping)."""

    sessions: async_sessionmaker[UnitSession]
    autocommit_engine: AsyncEngine | None = None
    ended: Callable[[BaseException | None], None] | None = None


class UnitOfWork(Repositories, AbstractUnitOfWork):
    """A transaction with typed repositories.

    Obtain one from :meth:`orchestrator_db.Database.unit_of_work`::

        async with db.unit_of_work() as uow:
            task = await uow.tasks.add(Task(title="Build", task_type="code", config={}))
            await uow.commit()

    ``session`` is the underlying :class:`~sqlalchemy.ext.asyncio.AsyncSession`,
    for queries the repositories do not offer; it runs inside the same error
    boundary, so it too raises only :mod:`orchestrator_db.errors`.
    """

    session: UnitSession

    def __init__(
        self,
        session_factory: async_sessionmaker[UnitSession],
        backend: Backend,
        *,
        autocommit_engine: AsyncEngine | None = None,
        before_start: Callable[[], Awaitable[None]] | None = None,
        route: Callable[[], Awaitable[Route]] | None = None,
        signals: Signals | None = None,
        observer: Observer | None = None,
        writes: bool = False,
        alone: bool = False,
    ) -> None:
        """``autocommit_engine``: the engine, in autocommit, of a unit whose
        statements each commit on their own; ``writes``: a write unit, which
        begins its transaction on a connection it checks out from its
        sessions' engine, else a read-only one (both: see
        :class:`~orchestrator_db._execution.transaction.OwnConnection`).
        ``before_start`` runs as the unit starts (the schema check);
        ``route``, then, may send the unit elsewhere (a read replica).
        ``signals``: the waiters that work this unit commits wakes.
        ``alone``: a unit of one call on the ``Database`` (see
        :mod:`orchestrator_db.calls`), whose objects are built detached; a
        write one sends one statement, in autocommit on ``autocommit_engine``."""
        self._default = Route(session_factory, autocommit_engine)
        self._backend = backend
        self._before_start = before_start
        self._route = route
        self._signals = signals
        self._observer = observer
        self._writes = writes
        self._alone = alone
        self._ended: Callable[[BaseException | None], None] | None = None
        self._executor: UnitExecutor | None = None
        self._open = False

    async def __aenter__(self) -> Self:
        if self._open:
            raise ValidationError("this unit of work is open already: start a new one")
        if self._before_start is not None:
            with Boundary(self._backend):
                await self._before_start()
        route = self._default
        if self._route is not None:
            with Boundary(self._backend):
                route = await self._route()
        self._open = True
        if self._executor is not None:  # a unit entered again starts afresh
            for name in NAMES:
                self.__dict__.pop(name, None)
        self._ended = route.ended
        # A write unit's session joins the transaction of the connection the
        # unit checks out itself, and ends it (see OwnConnection); sessions
        # handed out by Database.session_factory() keep SQLAlchemy's default.
        checks_out = self._writes and not self._alone
        self.session = session = (
            route.sessions(join_transaction_mode="control_fully")
            if checks_out
            else route.sessions()
        )
        self._executor = UnitExecutor(
            session,
            self._backend,
            route.autocommit_engine,
            self._signals,
            self._observer,
            checks_out=checks_out,
            read_only=not self._writes,
            detaches=self._alone,
            one_statement=self._alone and self._writes,
        )
        if self._observer is not None:
            self._observer.unit_opened()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        executor = self._executor
        self._open = False
        if exc is not None and self._observer is not None and not isinstance(exc, NeedsTransaction):
            self._observer.unit_failed()
        try:
            if executor is not None:
                with Boundary(self._backend):
                    await executor.close()  # rolls back whatever was not committed
            if isinstance(exc, SQLAlchemyError):
                # Raised through a connection of the session's (uow.session.connection()).
                translated = translate(exc, self._backend)
                raise translated from cause_of(translated, exc)
        except BaseException as error:
            self._tell_ended(error)
            raise
        self._tell_ended(exc)

    def _tell_ended(self, error: BaseException | None) -> None:
        ended, self._ended = self._ended, None
        if ended is not None:
            ended(error)

    @property
    def failure(self) -> DataLayerError | None:
        """The error that failed the unit (see the module); ``None`` while usable."""
        return self._running().failure

    def _made(self, repository: type[Repository[Any]]) -> Repository[Any]:
        """A repository of this unit of work (see :meth:`repository`)."""
        return repository(self._running())

    async def commit(self) -> None:
        """Make everything done in this unit of work permanent."""
        executor = self._running()
        if executor.failure is not None:
            raise TransactionAbortedError(executor.failure)
        await self.session.commit()  # tells the notices (see UnitSyncSession)

    async def rollback(self) -> None:
        """Discard everything done since the last commit; a failed unit is
        usable again afterwards."""
        await self.session.rollback()

    async def flush(self) -> None:
        """Send pending changes to the database without committing them."""
        await self._running().flush()

    def _running(self) -> UnitExecutor:
        if self._executor is None:
            raise ValidationError("use the unit of work as `async with db.unit_of_work() as uow`")
        return self._executor
