"""``Database``: the entry point. Owns the engine; hands out units of work."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self, TypedDict, TypeVar, Unpack

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.pool import NullPool, QueuePool

from orchestrator_db import health, retention, retrying, values
from orchestrator_db._execution.call import CallExecutor
from orchestrator_db._execution.engines import (
    backend_for,
    create_engine,
    create_read_engine,
    create_replica_engines,
)
from orchestrator_db._execution.errors import Boundary
from orchestrator_db._execution.executor import UnitSession
from orchestrator_db._execution.observe import Observer
from orchestrator_db._execution.replicas import ReplicaSet, ReplicaStatus
from orchestrator_db._execution.signals import Listener, Signals
from orchestrator_db.calls import Kind, RepositoryCalls
from orchestrator_db.errors import DataLayerError, ValidationError
from orchestrator_db.health import HEALTH_TIMEOUT, HealthReport, Metrics, PoolStatus
from orchestrator_db.migrations import runner as migrations
from orchestrator_db.migrations.runner import current_revision
from orchestrator_db.queue_worker import QueueWorker
from orchestrator_db.repositories.attributes import Repositories
from orchestrator_db.repositories.base import Repository
from orchestrator_db.settings import (
    DatabaseSettings,
    SQLiteExecution,
    normalize_url,
    split_url,
    url_from_env,
)
from orchestrator_db.unit_of_work import Route, UnitOfWork


class DatabaseOptions(TypedDict, total=False):
    """Keyword settings of :class:`Database`; see :class:`DatabaseSettings`."""

    pool_size: int
    max_overflow: int
    pool_timeout: float
    pool_recycle: int
    pool_pre_ping: bool
    busy_timeout: float
    sqlite_execution: SQLiteExecution
    application_name: str
    statement_timeout: float
    pgbouncer: bool
    replicas: Sequence[str | URL]
    max_replica_lag: float
    slow_statement_seconds: float | None
    echo: bool
    extra_engine_options: dict[str, Any]


T = TypeVar("T")
RepositoryT = TypeVar("RepositoryT", bound="Repository[Any]")


def _seconds(value: Any, field: str) -> float:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not 0 < value <= 86_400
        or value != value
    ):
        raise ValidationError(f"{field} must be a number of seconds above 0", field=field)
    return float(value)


class Database(Repositories):
    """A database the orchestrator keeps its state in.

    ``url`` is ``sqlite+aiosqlite:///path.db`` (``sqlite+aiosqlite://`` for an
    in-memory database) or ``postgresql+asyncpg://user:password@host/db``.
    Creating a ``Database`` opens nothing; connections are made on first use.
    Call :meth:`close` (or use ``async with``) when done.
    """

    def __init__(self, url: str | URL, **settings: Unpack[DatabaseOptions]) -> None:
        self.url, from_url = split_url(normalize_url(url))
        self.settings = DatabaseSettings().with_overrides(**{**from_url, **settings})
        self._backend = backend_for(self.url.get_backend_name())
        if self.settings.pgbouncer and self._backend.name != "postgresql":
            raise ValidationError("pgbouncer=True is a PostgreSQL setting", field="pgbouncer")
        replicas = [self._replica(replica) for replica in self.settings.replicas]
        try:
            self.engine: AsyncEngine = create_engine(self.url, self.settings)
            self._read_engine = create_read_engine(self.url, self.settings, self.engine)
            replica_engines = [create_replica_engines(url, options) for url, options in replicas]
        except (TypeError, ValueError, SQLAlchemyError) as error:
            # Options SQLAlchemy refuses: they can only be the user's.
            raise ValidationError(
                f"extra_engine_options refused: {type(error).__name__}: {error}",
                field="extra_engine_options",
            ) from error
        self._write_sessions = async_sessionmaker(
            self.engine, class_=UnitSession, expire_on_commit=False
        )
        self._read_sessions = async_sessionmaker(
            self._read_engine, class_=UnitSession, expire_on_commit=False
        )
        # One-statement writes (see orchestrator_db.calls): the write pool's
        # connections, each statement committing on its own.
        self._alone = None
        if self._backend.autocommit_writes(self.settings):
            alone = self.engine.execution_options(**self._backend.autocommit_options())
            self._alone = Route(
                async_sessionmaker(alone, class_=UnitSession, expire_on_commit=False), alone
            )
        autocommit = self._backend.autocommit_reads(self.settings)
        self._primary_reads = Route(self._read_sessions, self._read_engine if autocommit else None)
        self._replicas = ReplicaSet(replica_engines, self.settings.max_replica_lag)
        self._replica_routes = {
            replica: Route(
                async_sessionmaker(replica.engine, class_=UnitSession, expire_on_commit=False),
                replica.engine if self._backend.autocommit_reads(options) else None,
                functools.partial(self._replicas.ended, replica),
            )
            for replica, (_url, options) in zip(self._replicas.replicas, replicas, strict=True)
        }
        self._observer = Observer(self.settings.slow_statement_seconds)
        #: Probes that outlived their health check (see health.probe).
        self._background: set[asyncio.Task[Any]] = set()
        why_not = self._backend.cannot_listen(self.settings)
        self._signals = Signals(self._listen if why_not is None else None, why_not=why_not)
        #: The database's revision is one this package knows (see _check_schema).
        self._schema_known = False

    def _replica(self, replica: str | URL) -> tuple[URL, DatabaseSettings]:
        """A replica's URL and settings: the primary's, with what its own
        URL says (``?pgbouncer=true``)."""
        url, from_url = split_url(normalize_url(replica))
        if self._backend.name != "postgresql" or url.get_backend_name() != "postgresql":
            raise ValidationError("read replicas are PostgreSQL's", field="replicas")
        return url, self.settings.with_overrides(**from_url)

    @classmethod
    def from_env(cls, **settings: Unpack[DatabaseOptions]) -> Self:
        """A ``Database`` for ``$ORCHESTRATOR_DB_URL`` (default: ``./orchestrator.db``)."""
        return cls(url_from_env(), **settings)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def unit_of_work(self, *, read_only: bool = False, fresh: bool = False) -> UnitOfWork:
        """A new unit of work; use it as ``async with db.unit_of_work() as uow``.

        Write units (the default) take SQLite's write lock when they start
        (BEGIN IMMEDIATE), so concurrent writers queue for ``busy_timeout``
        instead of failing. ``read_only=True`` units run concurrently with
        writers and refuse writes with :class:`~orchestrator_db.errors.ReadOnlyError`;
        with read replicas they read from one, unless ``fresh=True`` (read
        your own writes: from the primary).
        """
        if read_only is not True and read_only is not False:
            values.boolean(read_only, "read_only")
        if fresh is not True and fresh is not False:
            values.boolean(fresh, "fresh")
        return self._unit("read" if read_only else "write", fresh=fresh)

    def _unit(self, kind: Kind, *, fresh: bool = False) -> UnitOfWork:
        """A unit of work of ``kind`` (see :mod:`orchestrator_db.calls`)."""
        check = None if self._schema_known else self._check_schema
        if kind == "write alone":
            assert self._alone is not None, "RepositoryCalls asks only when it may"
            return UnitOfWork(
                self._alone.sessions,
                self._backend,
                autocommit_engine=self._alone.autocommit_engine,
                before_start=check,
                signals=self._signals,
                observer=self._observer,
                writes=True,
                alone=True,
            )
        if kind == "write":
            return UnitOfWork(
                self._write_sessions,
                self._backend,
                before_start=check,
                signals=self._signals,
                observer=self._observer,
                writes=True,
            )
        primary = self._primary_reads
        return UnitOfWork(
            primary.sessions,
            self._backend,
            autocommit_engine=primary.autocommit_engine,
            before_start=check,
            route=None if fresh or not self._replica_routes else self._replica_route,
            observer=self._observer,
            alone=kind == "read alone",
        )

    async def _call_executor(self, kind: Kind) -> CallExecutor | None:
        """The executor of a call of one statement (see
        :mod:`orchestrator_db._execution.call`): on the write pool, or on
        the primary's read pool (not where a replica may serve the read, nor
        where read-only units are transactions: behind PgBouncer)."""
        if not self._schema_known:
            with Boundary(self._backend):
                await self._check_schema()
        if kind == "write alone":
            engine = self.engine
        elif self._replica_routes or self._primary_reads.autocommit_engine is None:
            return None
        else:
            engine = self._read_engine
        return CallExecutor(
            engine.sync_engine, self._backend, self._observer, read_only=kind == "read alone"
        )

    def _made(self, repository: type[Repository[Any]]) -> RepositoryCalls:
        """The calls of ``repository`` (see :meth:`repository`): each a unit
        of work of its own, as ``db.tasks`` (see :mod:`orchestrator_db.calls`)."""
        return RepositoryCalls(
            self._unit,
            self._call_executor,
            repository,
            self.dialect,
            alone=self._alone is not None,
        )

    async def _listen(self, wake: Callable[[str], None]) -> Listener:
        """The connection waiters listen on: of an engine of its own, which
        holds it (and nothing else) for as long as it lives."""
        options = {**self.settings.extra_engine_options, "poolclass": NullPool}
        engine = create_engine(self.url, self.settings.with_overrides(extra_engine_options=options))
        return await self._backend.listen(engine, wake)

    async def _replica_route(self) -> Route:
        replica = await self._replicas.choose()
        self._observer.reads_on_primary(replica is None)
        return self._primary_reads if replica is None else self._replica_routes[replica]

    def queue_worker(
        self,
        worker_id: str,
        *,
        task_types: Collection[str] | None = None,
        agent_types: Collection[str] | None = None,
        lease: timedelta | None = None,
    ) -> QueueWorker:
        """A worker's own connection to the work queue, for processes that
        mostly claim and complete tasks: use it as ``async with
        db.queue_worker("w1") as worker`` (see :mod:`orchestrator_db.queue_worker`)."""
        return QueueWorker(
            self.engine,
            self.settings,
            worker_id,
            task_types=task_types,
            agent_types=agent_types,
            lease=lease,
            before_start=self._check_schema,
            signals=self._signals,
            observer=self._observer,
        )

    def session_factory(self, *, read_only: bool = False) -> async_sessionmaker[UnitSession]:
        """The session factory behind units of work, for frameworks that want one."""
        return self._read_sessions if read_only else self._write_sessions

    # ----------------------------------------------------------- retention

    async def prune(
        self,
        *,
        older_than: timedelta | datetime,
        dry_run: bool = False,
        progress: Callable[[str, int], None] | None = None,
    ) -> dict[str, int]:
        """Delete what is old and done, and return the rows deleted per
        table (``tasks``, ``tool_executions``, ``events``, ``sessions``):
        tasks finished before ``older_than`` (an age or an instant) that no
        task depends on, with their tool executions; processed events;
        closed sessions. Batches are short transactions of their own
        (see :mod:`orchestrator_db.retention`), so workers keep claiming;
        ``progress(table, rows so far)`` follows them. ``dry_run`` counts
        what would go and deletes nothing."""
        cutoff = values.age_or_instant(older_than, "older_than")
        values.boolean(dry_run, "dry_run")
        if progress is not None and not callable(progress):
            raise ValidationError("progress must be callable", field="progress")
        if dry_run:
            return await retention.prunable(lambda: self.unit_of_work(read_only=True), cutoff)
        return await retention.prune(self.unit_of_work, cutoff, progress)

    # ---------------------------------------------------------- migrations

    async def migrate(self, revision: str = "head") -> None:
        """Upgrade the schema to ``revision``: the same revisions as ``alembic upgrade``.

        A database at a revision this package does not know (a newer
        version of it migrated the database) is refused with
        :class:`~orchestrator_db.errors.UnknownRevisionError`.
        """
        values.text(revision, "revision", min_length=1)
        await self._run_alembic(lambda config: command.upgrade(config, revision))

    async def downgrade(self, revision: str) -> None:
        """Downgrade the schema to ``revision`` (``"base"`` removes everything)."""
        values.text(revision, "revision", min_length=1)
        await self._run_alembic(lambda config: command.downgrade(config, revision))

    async def check_schema(self) -> None:
        """Compare the database's schema with the package's models (``alembic
        check``): :class:`~orchestrator_db.errors.SchemaNotReadyError` naming
        the differences, if there are any (or saying that the database is
        not at the head revision)."""

        def check(config: Config) -> None:
            migrations.at_head(config.attributes["connection"])
            command.check(config)

        await self._run_alembic(check)

    async def current_revision(self) -> str | None:
        async with Boundary(self._backend), self._read_engine.connect() as connection:
            return await connection.run_sync(current_revision)

    async def _run_alembic(self, alembic_command: Callable[[Config], None]) -> None:
        self._schema_known = False
        async with Boundary(self._backend), self.engine.connect() as connection:
            await connection.run_sync(lambda sync: migrations.run(alembic_command, sync))

    async def _check_schema(self) -> None:
        """Refuse to start the first unit of work on a database at a revision
        this package does not know (see :meth:`migrate`)."""
        if self._schema_known:
            return
        async with self._read_engine.connect() as connection:
            revision = await connection.run_sync(migrations.checked_revision)
        self._schema_known = revision is not None

    # -------------------------------------------------------------- health

    # A timeout argument, not asyncio.timeout() around the call: the report
    # must come back, not a cancellation.
    async def health_check(self, *, timeout: float = HEALTH_TIMEOUT) -> HealthReport:  # noqa: ASYNC109
        """Probe the database; returns within ``timeout`` seconds, and
        raises only for a ``timeout`` that is not a positive number. ``ok``
        only when the server answered and the schema is at the newest
        revision; else ``error`` says why. See :class:`HealthReport`."""
        report, _ = await self._probe(_seconds(timeout, "timeout"))
        return report

    async def wait_until_ready(
        self,
        *,
        timeout: float = 30.0,  # noqa: ASYNC109 (probes are bounded by what is left of it)
        at_head: bool = False,
    ) -> HealthReport:
        """Wait until the database answers (with ``at_head``: and its schema
        is at the newest revision), probing with back-off; the report that
        found it ready. See :func:`orchestrator_db.health.wait_until_ready`
        for what it raises. For a service starting beside its database."""
        seconds = _seconds(timeout, "timeout")
        values.boolean(at_head, "at_head")
        return await health.wait_until_ready(self._probe, seconds, at_head=at_head)

    async def _probe(self, seconds: float) -> tuple[HealthReport, DataLayerError | None]:
        return await health.probe(
            self._read_engine, self._backend, seconds, self.pool_status, self._background
        )

    async def run(
        self,
        work: Callable[[UnitOfWork], Awaitable[T]],
        *,
        retries: int = 3,
        read_only: bool = False,
    ) -> T:
        """``await work(uow)`` in a new unit of work, committed when it
        returns (unless ``read_only``); its result. After a
        :class:`~orchestrator_db.errors.TransactionConflictError` or a
        :class:`~orchestrator_db.errors.DatabaseUnavailableError` (a
        restart, a failover), ``work`` runs again in a fresh unit, up to
        ``retries`` more times, with exponential back-off and jitter. A
        connection lost during COMMIT leaves unknown whether it committed:
        pass only work that is safe to run twice."""
        values.integer(retries, "retries", minimum=0, maximum=100)
        values.boolean(read_only, "read_only")
        if not callable(work):
            raise ValidationError("work must be a coroutine function taking a unit of work")
        return await retrying.run(
            lambda: self.unit_of_work(read_only=read_only),
            work,
            retries=retries,
            commit=not read_only,
            observer=self._observer,
        )

    async def metrics(self) -> Metrics:
        """A snapshot for a dashboard (a Prometheus exporter, OpenTelemetry
        gauges): the pools, what the process counted since the ``Database``
        was made, and the tasks per status (one read)."""
        counted = dataclasses.asdict(self._observer.counters)  # not this read's unit
        async with self.unit_of_work(read_only=True, fresh=True) as uow:
            stats = await uow.tasks.stats()
        return Metrics(
            pool=self.pool_status(),
            read_pool=self.pool_status(read_only=True),
            tasks_by_status={status.value: count for status, count in stats.by_status.items()},
            **counted,
        )

    def replica_status(self) -> list[ReplicaStatus]:
        """What is known of each read replica: its lag at the last check,
        and whether (and for how long) it is passed over."""
        return self._replicas.status()

    def pool_status(self, *, read_only: bool = False) -> PoolStatus:
        """The connection pool of write units, or with ``read_only`` that of
        read-only units (the same pool on SQLite, a second one on PostgreSQL)."""
        pool = (self._read_engine if read_only else self.engine).sync_engine.pool
        if isinstance(pool, QueuePool):
            return PoolStatus(
                size=pool.size(),
                checked_out=pool.checkedout(),
                overflow=max(pool.overflow(), 0),
                checked_in=pool.checkedin(),
            )
        return PoolStatus(size=0, checked_out=0, overflow=0, checked_in=0)

    # ----------------------------------------------------------- lifetime

    async def close(self) -> None:
        """Close every pooled connection. The object may be used again after."""
        if self._background:  # health probes still going (see health.probe)
            await asyncio.wait(set(self._background))
        async with Boundary(self._backend):
            await self.engine.dispose()
            if self._read_engine.sync_engine.pool is not self.engine.sync_engine.pool:
                await self._read_engine.dispose()
            await self._replicas.dispose()
            await self._signals.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"Database({self.url.render_as_string(hide_password=True)!r})"
