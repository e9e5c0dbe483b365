"""Engine construction: URLs, pool settings, SQLite pragmas and BEGIN modes.

Nothing here runs at import time; :func:`create_engine` is called by
:class:`orchestrator_db.Database` and by the Alembic environment, so the CLI and
the library talk to the database with the same settings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from sqlalchemy import event
from sqlalchemy.dialects.sqlite.base import SQLiteCompiler
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry, QueuePool

from orchestrator_db import _aiosqlite_adapter
from orchestrator_db.errors import ValidationError

#: Environment variable holding the database URL (also read by ``alembic``).
URL_ENV_VAR = "ORCHESTRATOR_DB_URL"
DEFAULT_URL = "sqlite+aiosqlite:///./orchestrator.db"

#: Execution option selecting how a SQLite transaction begins.
BEGIN_MODE_OPTION = "orchestrator_db_begin"
#: Execution option marking a read-only transaction (``PRAGMA query_only`` on
#: SQLite; PostgreSQL uses its own ``postgresql_readonly`` option).
READ_ONLY_OPTION = "orchestrator_db_read_only"
BeginMode = Literal["IMMEDIATE", "DEFERRED", "NONE"]

#: Where SQLite statements run; see ``DatabaseSettings.sqlite_execution``.
SQLiteExecution = Literal["thread", "inline"]
SQLITE_EXECUTION_MODES: tuple[SQLiteExecution, ...] = ("thread", "inline")
_BEGIN_STATEMENTS: dict[str, str | None] = {
    "IMMEDIATE": "BEGIN IMMEDIATE",
    "DEFERRED": "BEGIN DEFERRED",
    # No BEGIN at all: each statement commits on its own. Used for PRAGMAs
    # that are ignored inside a transaction (foreign_keys during migrations).
    "NONE": None,
}

# journal_mode is persistent, the others are per connection and must be set on
# every new connection. synchronous=NORMAL is durable against application
# crashes in WAL mode; a power loss may lose the last commits.
_SQLITE_PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA foreign_keys = ON",
)

_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}


@dataclass(frozen=True)
class DatabaseSettings:
    """Tunable engine and pool settings. ``None`` picks the dialect default.

    Defaults and why:

    ``pool_size`` / ``max_overflow``
        SQLite 5 / 10: SQLite has one writer, more connections only add
        readers. PostgreSQL 10 / 20: enough for one process with many
        concurrent workers without exhausting ``max_connections`` (100) when a
        few processes share a server.
    ``pool_timeout`` 30 s
        How long a unit of work waits for a free connection before
        :class:`~orchestrator_db.errors.DatabaseUnavailableError`.
    ``pool_recycle``
        PostgreSQL 1800 s: below the idle timeouts of common proxies and
        firewalls. SQLite: never (a file connection does not go stale).
    ``pool_pre_ping`` ``False``
        A ping costs a round trip on every checkout: a third of a primary-key
        read in a read-only unit of work. Without it, a connection dropped by
        a server restart fails once, as
        :class:`~orchestrator_db.errors.DatabaseUnavailableError`, and
        SQLAlchemy then replaces every pooled connection; ``pool_recycle``
        bounds how old a connection gets. Turn it on where failovers are
        frequent and one failed unit of work is not acceptable.
    ``busy_timeout`` 30 s (SQLite)
        How long a writer waits for the write lock. Every write transaction
        starts with BEGIN IMMEDIATE, so this wait is honoured instead of the
        transaction failing with "database is locked".
    ``sqlite_execution`` ``"thread"`` (SQLite)
        Where statements run. ``"thread"``: in aiosqlite's worker thread, one
        thread hop per statement; the event loop never waits for SQLite.
        ``"inline"``: on the event loop's thread, with no hop: units of work
        cost 30-45% less, and each statement holds the loop while
        SQLite runs it (microseconds for point reads and writes and for the
        queue's statements; milliseconds for large bulk inserts, long scans
        and WAL checkpoints). Waiting for the write lock never holds the loop
        in either mode. Choose ``"inline"`` for processes that mostly talk to
        the database, such as queue workers.
    ``application_name`` (PostgreSQL)
        Shown in ``pg_stat_activity`` so operators can tell who holds a lock.
    ``statement_timeout`` (PostgreSQL, seconds, default none)
        A server-side cap on any single statement.
    PostgreSQL transactions run at READ COMMITTED, the server default; the
    repositories take row locks (``FOR UPDATE``) where they read-then-write.
    Read-only units of work use a second pool of the same size, in
    autocommit with ``default_transaction_read_only`` on (see
    :mod:`orchestrator_db.unit_connection`).
    """

    pool_size: int | None = None
    max_overflow: int | None = None
    pool_timeout: float = 30.0
    pool_recycle: int | None = None
    pool_pre_ping: bool | None = None
    busy_timeout: float = 30.0
    sqlite_execution: SQLiteExecution = "thread"
    application_name: str = "orchestrator_db"
    statement_timeout: float | None = None
    echo: bool = False
    extra_engine_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.sqlite_execution not in SQLITE_EXECUTION_MODES:
            raise ValidationError(
                f"sqlite_execution must be one of {', '.join(SQLITE_EXECUTION_MODES)}, "
                f"not {self.sqlite_execution!r}",
                field="sqlite_execution",
            )

    def with_overrides(self, **overrides: Any) -> DatabaseSettings:
        unknown = set(overrides) - set(self.__dataclass_fields__)
        if unknown:
            raise ValidationError(
                f"unknown database setting(s): {', '.join(sorted(unknown))}; "
                f"expected some of: {', '.join(sorted(self.__dataclass_fields__))}"
            )
        return replace(self, **overrides)


def normalize_url(url: str | URL) -> URL:
    """Parse ``url`` and select the async driver for its database.

    ``sqlite:///x.db`` and ``postgresql://...`` are accepted and mapped to
    aiosqlite and asyncpg; any other database is rejected with a clear error.
    """
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except ArgumentError as exc:
        raise ValidationError(f"invalid database URL {str(url)!r}: {exc}") from None
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ValidationError(
            f"unsupported database URL scheme {parsed.drivername!r}; use "
            "sqlite+aiosqlite:///path.db or postgresql+asyncpg://user@host/db"
        )
    return parsed.set(drivername=driver)


def url_from_env() -> str:
    return os.environ.get(URL_ENV_VAR) or DEFAULT_URL


def is_memory_sqlite(url: URL) -> bool:
    database = url.database or ""
    return url.get_backend_name() == "sqlite" and (
        database in ("", ":memory:") or "mode=memory" in database
    )


def create_engine(
    url: str | URL, settings: DatabaseSettings | None = None, *, read_only: bool = False
) -> AsyncEngine:
    """Create the async engine for ``url`` with the package's settings applied.

    ``read_only`` (PostgreSQL only) makes an engine for read-only units of
    work: autocommit, so a read costs one round trip instead of three
    (BEGIN, the query, ROLLBACK), with every statement read-only on the server.
    Under READ COMMITTED each statement sees a fresh snapshot anyway, so
    running reads outside a transaction changes nothing they can observe.
    """
    settings = settings or DatabaseSettings()
    parsed = normalize_url(url)
    options: dict[str, Any] = {"echo": settings.echo, "pool_timeout": settings.pool_timeout}
    if parsed.get_backend_name() == "sqlite":
        if read_only:
            raise ValueError("SQLite read-only units share the engine; see Database")
        options.update(_sqlite_options(parsed, settings))
    else:
        options.update(_postgresql_options(settings, read_only=read_only))
    options.update(settings.extra_engine_options)
    poolclass = options.get("poolclass")
    if poolclass is not None and not issubclass(poolclass, QueuePool):
        # NullPool / StaticPool take no sizing arguments.
        for key in ("pool_size", "max_overflow", "pool_timeout"):
            options.pop(key, None)
    engine = create_async_engine(parsed, **options)
    if parsed.get_backend_name() == "sqlite":
        _install_sqlite_listeners(engine)
    return engine


def pool_recycle(backend: str, settings: DatabaseSettings) -> int:
    """Seconds after which a connection is replaced (-1: never); see
    ``DatabaseSettings`` for the defaults."""
    if settings.pool_recycle is not None:
        return settings.pool_recycle
    return 1800 if backend == "postgresql" else -1


def _sqlite_options(url: URL, settings: DatabaseSettings) -> dict[str, Any]:
    options: dict[str, Any] = {
        "poolclass": AsyncAdaptedQueuePool,
        "pool_pre_ping": bool(settings.pool_pre_ping),
        "pool_recycle": pool_recycle("sqlite", settings),
        # sqlite3's own busy handler: waits for locks, in C, without formatting
        # the value into a PRAGMA.
        "connect_args": {"timeout": settings.busy_timeout},
    }
    inline = settings.sqlite_execution == "inline"
    adapter = _aiosqlite_adapter.dbapi(inline=inline, lock_timeout=settings.busy_timeout)
    if adapter is not None:
        options["module"] = adapter
    elif inline:
        raise ValidationError(
            "sqlite_execution='inline' needs aiosqlite's Connection._execute and "
            "Connection._conn, which this aiosqlite version lacks; use 'thread'",
            field="sqlite_execution",
        )
    if inline:
        # The adapter waits for locks itself, without holding the event loop;
        # the connection is opened in aiosqlite's thread and used in the loop's.
        options["connect_args"] = {"timeout": 0, "check_same_thread": False}
    if is_memory_sqlite(url):
        # A :memory: database lives and dies with its one connection: share
        # exactly one, and let units of work queue for it.
        options.update(pool_size=1, max_overflow=0, pool_recycle=-1)
    else:
        options.update(
            pool_size=settings.pool_size if settings.pool_size is not None else 5,
            max_overflow=settings.max_overflow if settings.max_overflow is not None else 10,
        )
    return options


def _postgresql_options(settings: DatabaseSettings, *, read_only: bool) -> dict[str, Any]:
    server_settings = {"application_name": settings.application_name}
    if settings.statement_timeout is not None:
        server_settings["statement_timeout"] = str(int(settings.statement_timeout * 1000))
    if read_only:
        server_settings["default_transaction_read_only"] = "on"
    return {
        "pool_size": settings.pool_size if settings.pool_size is not None else 10,
        "max_overflow": settings.max_overflow if settings.max_overflow is not None else 20,
        "pool_recycle": pool_recycle("postgresql", settings),
        "pool_pre_ping": bool(settings.pool_pre_ping),
        "isolation_level": "AUTOCOMMIT" if read_only else "READ COMMITTED",
        "connect_args": {"server_settings": server_settings},
    }


class _SQLiteCompiler(SQLiteCompiler):
    """SQLAlchemy's SQLite compiler ignores table hints; SQLite has one that
    matters, ``INDEXED BY``, which pins a query to the index it was written
    for (see the claim in ``repositories.task_queue``)."""

    def get_from_hint_text(self, table: Any, text: str | None) -> str | None:
        return text


def _install_sqlite_listeners(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine
    sync_engine.dialect.statement_compiler = _SQLiteCompiler

    @event.listens_for(sync_engine, "connect")
    def _configure_connection(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        # The driver must not issue its own (DEFERRED) BEGIN: _begin does.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            for pragma in _SQLITE_PRAGMAS:
                cursor.execute(pragma)
        finally:
            cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _begin(connection: Connection) -> None:
        options = connection.get_execution_options()
        read_only = bool(options.get(READ_ONLY_OPTION, False))
        info = connection.connection.info
        # query_only is per connection: switch it only when it changes, so
        # units of work of one kind pay nothing for it.
        if info.get(READ_ONLY_OPTION, False) is not read_only:
            connection.exec_driver_sql(
                "PRAGMA query_only = ON" if read_only else "PRAGMA query_only = OFF"
            )
            info[READ_ONLY_OPTION] = read_only
        statement = _BEGIN_STATEMENTS[options.get(BEGIN_MODE_OPTION, "IMMEDIATE")]
        if statement is None:
            return
        adapted = connection.connection.dbapi_connection
        if isinstance(adapted, _aiosqlite_adapter.OneHopConnection):
            adapted.defer_begin(statement)  # sent with the first statement: one hop fewer
        else:
            connection.exec_driver_sql(statement)
