"""Settings of a :class:`~orchestrator_db.Database`: its URL and its engine and pool options.

Nothing here talks to a database: the engines are built from these settings by
the execution layer (:mod:`orchestrator_db._execution`), per database engine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from orchestrator_db import values
from orchestrator_db.errors import ValidationError

#: Environment variable holding the database URL (also read by ``alembic``).
URL_ENV_VAR = "ORCHESTRATOR_DB_URL"
DEFAULT_URL = "sqlite+aiosqlite:///./orchestrator.db"

#: Where SQLite statements run; see ``DatabaseSettings.sqlite_execution``.
SQLiteExecution = Literal["thread", "inline"]
SQLITE_EXECUTION_MODES: tuple[SQLiteExecution, ...] = ("thread", "inline")

#: The longest timeout a setting may name (a day).
_MAX_SECONDS = 86_400

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
        :class:`~orchestrator_db.errors.PoolTimeoutError`.
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
    ``pgbouncer`` ``False`` (PostgreSQL)
        The URL names a PgBouncer in transaction pooling mode (or another
        pooler that hands each transaction to any server connection). Then
        no statement is prepared by name (asyncpg's and SQLAlchemy's
        statement caches are off: each statement is parsed where it runs),
        nothing is set at connection start-up (PgBouncer refuses startup
        parameters it does not know), read-only units open ``BEGIN READ
        ONLY`` transactions on the one pool instead of running in
        autocommit, and ``statement_timeout`` is set for each transaction
        (``set_config(..., true)``, one more round trip per transaction).
        Left ``False`` behind such a pooler, the first clash of prepared
        statements raises :class:`~orchestrator_db.errors.DatabaseConfigurationError`
        saying so.
    ``slow_statement_seconds`` 1 s
        A statement that takes this long or longer is logged at WARNING on
        ``orchestrator_db.statements``, by name and duration, never with its
        values, and counted in ``db.metrics()``; ``None`` logs none.
    ``replicas`` none (PostgreSQL)
        URLs of read replicas: read-only units of work go to them, in turn
        (``db.unit_of_work(read_only=True, fresh=True)`` reads from the
        primary). A replica that does not answer, or lags more than
        ``max_replica_lag`` seconds (default 5), is passed over until it
        recovers; with none usable, reads go to the primary. See
        :mod:`orchestrator_db._execution.replicas`.
    PostgreSQL transactions run at READ COMMITTED, the server default; the
    repositories take row locks (``FOR UPDATE``) where they read-then-write.
    Read-only units of work use a second pool of the same size, in
    autocommit with ``default_transaction_read_only`` on (see
    :mod:`orchestrator_db._execution`).
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
    pgbouncer: bool = False
    # Not in the repr: a URL may hold a password.
    replicas: tuple[str | URL, ...] = field(default=(), repr=False)
    max_replica_lag: float = 5.0
    slow_statement_seconds: float | None = 1.0
    echo: bool = False
    # Not in the repr: connect_args may hold a password.
    extra_engine_options: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.sqlite_execution not in SQLITE_EXECUTION_MODES:
            raise ValidationError(
                f"sqlite_execution must be one of {', '.join(SQLITE_EXECUTION_MODES)}, "
                f"not {self.sqlite_execution!r}",
                field="sqlite_execution",
            )
        for name in ("pool_size", "max_overflow", "pool_recycle"):
            setting = getattr(self, name)
            if setting is not None:
                values.integer(setting, name, minimum=-1 if name == "pool_recycle" else 0)
        if isinstance(self.replicas, str | URL) or not isinstance(self.replicas, list | tuple):
            raise ValidationError("replicas must be a list of database URLs", field="replicas")
        object.__setattr__(self, "replicas", tuple(normalize_url(u) for u in self.replicas))
        if self.max_replica_lag is None:
            raise ValidationError(
                "max_replica_lag must be a number of seconds", field="max_replica_lag"
            )
        for name in (
            "pool_timeout",
            "busy_timeout",
            "statement_timeout",
            "max_replica_lag",
            "slow_statement_seconds",
        ):
            setting = getattr(self, name)
            if setting is not None and (
                not isinstance(setting, int | float)
                or isinstance(setting, bool)
                or not 0 <= setting <= _MAX_SECONDS
            ):
                raise ValidationError(
                    f"{name} must be a number of seconds from 0 to {_MAX_SECONDS}", field=name
                )
        for name in ("pool_pre_ping", "echo", "pgbouncer"):
            setting = getattr(self, name)
            if setting is not None and not isinstance(setting, bool):
                raise ValidationError(f"{name} must be True or False", field=name)
        values.text(self.application_name, "application_name", max_length=63)
        if not isinstance(self.extra_engine_options, dict):
            raise ValidationError(
                "extra_engine_options must be a dict of create_async_engine() options",
                field="extra_engine_options",
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
    except (ArgumentError, ValueError):
        # The text may hold a password: it is not repeated.
        raise ValidationError(
            "invalid database URL: expected sqlite+aiosqlite:///path.db or "
            "postgresql+asyncpg://user:password@host/db",
            field="url",
        ) from None
    if not isinstance(parsed, URL):
        raise ValidationError(
            f"the database URL must be a string or a URL, not {type(url).__name__}", field="url"
        )
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ValidationError(
            f"unsupported database URL scheme {parsed.drivername!r}; use "
            "sqlite+aiosqlite:///path.db or postgresql+asyncpg://user@host/db"
        )
    return parsed.set(drivername=driver)


#: Query parameters of a database URL that are settings of the package,
#: taken out of the URL before the driver sees it: ``?pgbouncer=true``.
URL_SETTINGS = ("pgbouncer",)
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def split_url(url: URL) -> tuple[URL, dict[str, Any]]:
    """``url`` without the package's own query parameters
    (:data:`URL_SETTINGS`), and their values as settings. Lets one URL
    (``$ORCHESTRATOR_DB_URL``, ``alembic -x url=...``) say everything."""
    found: dict[str, Any] = {}
    for name in URL_SETTINGS:
        if name not in url.query:
            continue
        raw = url.query[name]
        text = raw.lower() if isinstance(raw, str) else ""
        if text not in _TRUE + _FALSE:
            raise ValidationError(f"the URL's {name} parameter must be true or false", field=name)
        found[name] = text in _TRUE
    return url.difference_update_query(URL_SETTINGS), found


def url_from_env() -> str:
    return os.environ.get(URL_ENV_VAR) or DEFAULT_URL


def sqlite_file(url: URL) -> str | None:
    """The path of the SQLite file ``url`` names (``None``: not a SQLite
    file, or an in-memory database)."""
    if url.get_backend_name() != "sqlite" or is_memory_sqlite(url):
        return None
    database = url.database or ""
    return database.removeprefix("file:").split("?", 1)[0]


def is_memory_sqlite(url: URL) -> bool:
    database = url.database or ""
    return url.get_backend_name() == "sqlite" and (
        database in ("", ":memory:")
        or "mode=memory" in database
        or url.query.get("mode") == "memory"
    )
