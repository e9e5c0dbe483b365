"""``Database``: the entry point. Owns the engine; hands out units of work."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self, TypedDict, Unpack

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.pool import QueuePool

from orchestrator_db import retention, values
from orchestrator_db._execution.engines import backend_for, create_engine, create_read_engine
from orchestrator_db._execution.errors import Boundary, translate
from orchestrator_db._execution.executor import UnitSession
from orchestrator_db.errors import UnknownRevisionError, ValidationError
from orchestrator_db.migrations import runner as migrations
from orchestrator_db.migrations.runner import current_revision, head_revision
from orchestrator_db.queue_worker import QueueWorker
from orchestrator_db.settings import DatabaseSettings, SQLiteExecution, normalize_url, url_from_env
from orchestrator_db.unit_of_work import UnitOfWork


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
    echo: bool
    extra_engine_options: dict[str, Any]


@dataclass(frozen=True)
class PoolStatus:
    size: int
    checked_out: int
    overflow: int
    checked_in: int


@dataclass(frozen=True)
class HealthReport:
    """What :meth:`Database.health_check` found. ``ok`` is False on any failure."""

    ok: bool
    latency_ms: float
    dialect: str
    server_version: str | None
    current_revision: str | None
    head_revision: str | None
    pool: PoolStatus
    error: str | None = None

    @property
    def up_to_date(self) -> bool:
        """The database is at the newest revision this package ships."""
        return self.current_revision is not None and self.current_revision == self.head_revision


class Database:
    """A database the orchestrator keeps its state in.

    ``url`` is ``sqlite+aiosqlite:///path.db`` (``sqlite+aiosqlite://`` for an
    in-memory database) or ``postgresql+asyncpg://user:password@host/db``.
    Creating a ``Database`` opens nothing; connections are made on first use.
    Call :meth:`close` (or use ``async with``) when done.
    """

    def __init__(self, url: str | URL, **settings: Unpack[DatabaseOptions]) -> None:
        self.url = normalize_url(url)
        self.settings = DatabaseSettings().with_overrides(**settings)
        self._backend = backend_for(self.url.get_backend_name())
        try:
            self.engine: AsyncEngine = create_engine(self.url, self.settings)
            self._read_engine = create_read_engine(self.engine, self.url, self.settings)
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
        #: The database's revision is one this package knows (see _check_schema).
        self._schema_known = False

    @classmethod
    def from_env(cls, **settings: Unpack[DatabaseOptions]) -> Self:
        """A ``Database`` for ``$ORCHESTRATOR_DB_URL`` (default: ``./orchestrator.db``)."""
        return cls(url_from_env(), **settings)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def unit_of_work(self, *, read_only: bool = False) -> UnitOfWork:
        """A new unit of work; use it as ``async with db.unit_of_work() as uow``.

        Write units (the default) take SQLite's write lock when they start
        (BEGIN IMMEDIATE), so concurrent writers queue for ``busy_timeout``
        instead of failing. ``read_only=True`` units run concurrently with
        writers and refuse writes with :class:`~orchestrator_db.errors.ReadOnlyError`.
        """
        if read_only is not True and read_only is not False:
            values.boolean(read_only, "read_only")
        check = None if self._schema_known else self._check_schema
        if not read_only:
            return UnitOfWork(self._write_sessions, self._backend, before_start=check)
        autocommit = self._read_engine if self._backend.autocommit_reads else None
        return UnitOfWork(
            self._read_sessions, self._backend, autocommit_engine=autocommit, before_start=check
        )

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

    async def health_check(self) -> HealthReport:
        """Probe the database; never raises. See :class:`HealthReport`."""
        started = time.perf_counter()
        version: str | None = None
        current: str | None = None
        error: str | None = None
        try:
            async with self._read_engine.connect() as connection:
                await connection.exec_driver_sql("SELECT 1")
                info = connection.dialect.server_version_info
                version = ".".join(str(part) for part in info) if info else None
                current = await connection.run_sync(current_revision)
            if current is None:
                error = "the database has not been migrated: run `await db.migrate()`"
            elif current not in migrations.known_revisions():
                error = str(UnknownRevisionError(current, head_revision()))
        except Exception as exc:
            error = str(translate(exc, self._backend))
        latency_ms = (time.perf_counter() - started) * 1000
        return HealthReport(
            ok=error is None,
            latency_ms=latency_ms,
            dialect=self.dialect,
            server_version=version,
            current_revision=current,
            head_revision=head_revision(),
            pool=self.pool_status(),
            error=error,
        )

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
        async with Boundary(self._backend):
            await self.engine.dispose()
            if self._read_engine.sync_engine.pool is not self.engine.sync_engine.pool:
                await self._read_engine.dispose()

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
