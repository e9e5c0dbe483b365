"""The SQLite backend: aiosqlite through the package's adapter, WAL, BEGIN IMMEDIATE.

Every connection gets ``journal_mode=WAL``, ``synchronous=NORMAL`` (durable
against application crashes; a power loss may lose the last commits),
``foreign_keys=ON`` and the busy timeout. The driver issues no BEGIN of its
own: the ``begin`` listener sends ``BEGIN IMMEDIATE`` for write units (the
write lock is taken up front, so concurrent writers queue for
``busy_timeout`` instead of failing with "database is locked"), and no BEGIN
at all for read-only units (with ``PRAGMA query_only``: each statement reads
its own snapshot, as on PostgreSQL) and for the migration runner's PRAGMAs
that a transaction would ignore.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
from collections.abc import Iterator
from typing import Any, Literal

from sqlalchemy import Connection, Engine, event
from sqlalchemy.dialects.sqlite.base import SQLiteCompiler
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry, PoolProxiedConnection
from sqlalchemy.util.concurrency import await_

from orchestrator_db._execution import aiosqlite_adapter
from orchestrator_db._execution.backend import Backend, Fetch
from orchestrator_db.errors import (
    CheckViolationError,
    ConstraintViolationError,
    DatabaseConfigurationError,
    DatabaseError,
    DatabaseUnavailableError,
    DataLayerError,
    DuplicateKeyError,
    ForeignKeyViolationError,
    NotNullViolationError,
    ReadOnlyError,
    SchemaNotReadyError,
    TransactionConflictError,
    ValidationError,
)
from orchestrator_db.models import Base
from orchestrator_db.settings import DatabaseSettings, is_memory_sqlite

#: Execution option selecting how a SQLite transaction begins.
BEGIN_MODE_OPTION = "orchestrator_db_begin"
#: Execution option marking a read-only transaction (``PRAGMA query_only``).
READ_ONLY_OPTION = "orchestrator_db_read_only"
BeginMode = Literal["IMMEDIATE", "DEFERRED", "NONE"]
_BEGIN_STATEMENTS: dict[str, str | None] = {
    "IMMEDIATE": "BEGIN IMMEDIATE",
    "DEFERRED": "BEGIN DEFERRED",
    # No BEGIN at all: each statement commits on its own. Used for PRAGMAs
    # that are ignored inside a transaction (foreign_keys during migrations),
    # and by read-only units.
    "NONE": None,
}

# journal_mode is persistent, the others are per connection and must be set on
# every new connection.
_PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA foreign_keys = ON",
)


class _SQLiteCompiler(SQLiteCompiler):
    """SQLAlchemy's SQLite compiler ignores table hints; SQLite has one that
    matters, ``INDEXED BY``, which pins a query to the index it was written
    for (see the claim in :mod:`orchestrator_db.sql.queue`)."""

    def get_from_hint_text(self, table: Any, text: str | None) -> str | None:
        return text


class SQLiteBackend(Backend):
    name = "sqlite"
    names_foreign_keys = False
    interruptible = False

    def engine_options(
        self, url: URL, settings: DatabaseSettings, *, read_only: bool
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        if read_only:
            raise ValueError("SQLite read-only units share the write engine; see read_engine()")
        defaults: dict[str, Any] = {
            "poolclass": AsyncAdaptedQueuePool,
            "pool_pre_ping": bool(settings.pool_pre_ping),
            "pool_recycle": self.recycle_seconds(settings),
            "pool_size": settings.pool_size if settings.pool_size is not None else 5,
            "max_overflow": settings.max_overflow if settings.max_overflow is not None else 10,
        }
        inline = settings.sqlite_execution == "inline"
        enforced: dict[str, Any] = {
            # sqlite3's own busy handler waits for locks, in C. Inline, the
            # adapter waits itself without holding the event loop, and the
            # connection opened in aiosqlite's thread is used in the loop's.
            "connect_args": (
                {"timeout": 0, "check_same_thread": False}
                if inline
                else {"timeout": settings.busy_timeout}
            ),
        }
        adapter = aiosqlite_adapter.dbapi(inline=inline, lock_timeout=settings.busy_timeout)
        if adapter is not None:
            enforced["module"] = adapter
        elif inline:
            raise ValidationError(
                "sqlite_execution='inline' needs aiosqlite's Connection._execute and "
                "Connection._conn, which this aiosqlite version lacks; use 'thread'",
                field="sqlite_execution",
            )
        if is_memory_sqlite(url):
            # A :memory: database lives and dies with its one connection: share
            # exactly one, and let units of work queue for it.
            enforced.update(pool_size=1, max_overflow=0, pool_recycle=-1)
        return defaults, enforced

    def configure(self, engine: AsyncEngine, settings: DatabaseSettings) -> None:
        sync_engine = engine.sync_engine
        sync_engine.dialect.statement_compiler = _SQLiteCompiler
        event.listen(sync_engine, "do_connect", _create_privately)
        event.listen(sync_engine, "connect", _configure_connection)
        event.listen(sync_engine, "engine_connect", _match_read_only)
        event.listen(sync_engine, "begin", _begin)

    #: One pool: readers run with query_only on and no BEGIN, each
    #: statement its own snapshot, as PostgreSQL's read-only units in
    #: autocommit: a one-statement unit is one hop to SQLite's thread, with
    #: no ROLLBACK after it, on a connection it checks out itself.
    reads_share_the_pool = True

    def autocommit_reads(self, settings: DatabaseSettings) -> bool:
        return True

    def start_call(self, raw: PoolProxiedConnection, *, read_only: bool) -> bool:
        # No BEGIN is sent on a connection no Connection wraps: each statement
        # commits on its own; only query_only is to be matched (what
        # _match_read_only does as a Connection is made), and stays so.
        _match_pooled(raw, read_only)
        return False

    def connect_listeners(self, engine: Engine) -> int:
        return sum(fn is _match_read_only for fn in engine.dispatch.engine_connect)

    def autocommit_options(self) -> dict[str, Any]:
        # No BEGIN: SQLite runs the statement as a transaction of its own,
        # taking the write lock as it starts (waiting for it as any BEGIN does).
        return {BEGIN_MODE_OPTION: "NONE"}

    def read_only_options(self) -> dict[str, Any]:
        return {BEGIN_MODE_OPTION: "NONE", READ_ONLY_OPTION: True}

    def recycle_seconds(self, settings: DatabaseSettings) -> int:
        # A file connection does not go stale.
        return settings.pool_recycle if settings.pool_recycle is not None else -1

    @contextlib.contextmanager
    def migrating(self, connection: Connection) -> Iterator[None]:
        # A batch rebuild of a referenced table would fire ON DELETE actions
        # with foreign keys on; the PRAGMA is ignored inside a transaction.
        _set_foreign_keys(connection, enabled=False)
        try:
            yield
        finally:
            _set_foreign_keys(connection, enabled=True)

    def check_migrations(self, connection: Connection) -> None:
        violations = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if violations:
            tables = sorted({str(row[0]) for row in violations})
            raise DatabaseError(
                f"the migration left {len(violations)} rows violating foreign keys in "
                f"{', '.join(tables)}; it was rolled back"
            )

    def fetcher(self, raw: PoolProxiedConnection) -> Fetch | None:
        adapted = raw.dbapi_connection
        if isinstance(adapted, aiosqlite_adapter.OneHopConnection):
            return adapted.fetch_all
        return None

    def translate(
        self, error: BaseException, entity: str | None, key: Any
    ) -> DataLayerError | None:
        if isinstance(error, sqlite3.Error):
            return _translate(error, entity, key)
        return None


SQLITE = SQLiteBackend()


def _create_privately(
    dialect: Any, record: ConnectionPoolEntry, cargs: list[Any], cparams: dict[str, Any]
) -> None:
    """Create a new database file readable by its owner only (0600), whatever
    the umask: SQLite gives its -wal and -shm files the database file's mode."""
    path = cargs[0] if cargs else cparams.get("database")
    if not isinstance(path, str) or path in ("", ":memory:") or cparams.get("uri"):
        return
    # Anything else (no such directory, no permission, a name too long) is for
    # SQLite to report, as it reports it: a configuration error.
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def _set_foreign_keys(connection: Connection, *, enabled: bool) -> None:
    if connection.in_transaction():
        connection.commit()
    connection.execution_options(**{BEGIN_MODE_OPTION: "NONE"})
    try:
        statement = "PRAGMA foreign_keys = ON" if enabled else "PRAGMA foreign_keys = OFF"
        connection.exec_driver_sql(statement)
        connection.commit()
    finally:
        connection.execution_options(**{BEGIN_MODE_OPTION: "IMMEDIATE"})


#: PRAGMAs whose argument names what to read, not a value to set.
_READING_PRAGMAS = frozenset(
    {
        "collation_list", "compile_options", "database_list", "foreign_key_check",
        "foreign_key_list", "function_list", "index_info", "index_list", "index_xinfo",
        "integrity_check", "module_list", "pragma_list", "quick_check", "table_info",
        "table_list", "table_xinfo",
    }
)  # fmt: skip


class _Guard:
    """Refuses, while its connection serves read-only units, ATTACH, DETACH
    and any PRAGMA that sets a value: ``query_only = OFF`` would let the unit write, and with it
    every later read-only unit the pooled connection serves; other settings
    would outlive the unit too. SQLite asks it as it prepares a statement
    (cached statements are not asked again), in the connection's thread."""

    __slots__ = ("read_only",)

    def __init__(self) -> None:
        self.read_only = False

    def __call__(self, action: int, name: str | None, value: str | None, *_: Any) -> int:
        if not self.read_only:
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_PRAGMA:
            reads = value is None or (name or "").lower() in _READING_PRAGMAS
            return sqlite3.SQLITE_OK if reads else sqlite3.SQLITE_DENY
        # An attached database would stay attached to the pooled connection.
        if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK


_GUARD = "orchestrator_db_guard"


def _configure_connection(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    # The driver must not issue its own (DEFERRED) BEGIN: _begin does.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in _PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()
    guard = record.info[_GUARD] = _Guard()
    await_(dbapi_connection._connection.set_authorizer(guard))


def _match_read_only(connection: Connection) -> None:
    """Turn ``PRAGMA query_only`` on for the read-only engine's connections
    and off for the others as they are checked out: a read-only unit's
    statements that go straight to the driver begin no transaction, so this
    cannot wait for a ``begin``."""
    read_only = bool(connection.get_execution_options().get(READ_ONLY_OPTION, False))
    _match_pooled(connection.connection, read_only)


def _match_pooled(pooled: PoolProxiedConnection, read_only: bool) -> None:
    # query_only is per connection: switch it only when it changes, so
    # units of work of one kind pay nothing for it.
    if pooled.info.get(READ_ONLY_OPTION, False) is read_only:
        return
    guard: _Guard = pooled.info[_GUARD]
    # On the driver's connection: through the Connection, the PRAGMAs would
    # begin a transaction (where foreign_keys is ignored).
    try:
        guard.read_only = False
        cursor = pooled.cursor()
        try:
            cursor.execute("PRAGMA query_only = ON" if read_only else "PRAGMA query_only = OFF")
            if not read_only:
                # A read-only unit runs without BEGIN, where a PRAGMA its caller
                # sent takes effect: the write units after it check foreign keys.
                cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()
    except BaseException as error:
        # Raised in Connection.__init__: nobody would give the connection
        # back; its state is unknown (cancelled mid-PRAGMA).
        pooled.invalidate(error)
        raise
    guard.read_only = read_only
    pooled.info[READ_ONLY_OPTION] = read_only


def _begin(connection: Connection) -> None:
    # A connection SQLAlchemy reconnected after an invalidation is a new
    # one that no engine_connect saw.
    _match_read_only(connection)
    options = connection.get_execution_options()
    statement = _BEGIN_STATEMENTS[options.get(BEGIN_MODE_OPTION, "IMMEDIATE")]
    if statement is None:
        return
    adapted = connection.connection.dbapi_connection
    if isinstance(adapted, aiosqlite_adapter.OneHopConnection):
        adapted.defer_begin(statement)  # sent with the first statement: one hop fewer
    else:
        connection.exec_driver_sql(statement)


# ------------------------------------------------------------------ errors

_COLUMNS = re.compile(r"constraint failed: (.+)$")
_NO_TABLE = re.compile(r"no such table: (\S+)")

_CONSTRAINTS: dict[str, type[ConstraintViolationError]] = {
    "SQLITE_CONSTRAINT_PRIMARYKEY": DuplicateKeyError,
    "SQLITE_CONSTRAINT_UNIQUE": DuplicateKeyError,
    "SQLITE_CONSTRAINT_FOREIGNKEY": ForeignKeyViolationError,
    "SQLITE_CONSTRAINT_CHECK": CheckViolationError,
    "SQLITE_CONSTRAINT_NOTNULL": NotNullViolationError,
}
# An I/O error may pass (a network file system); a full disk is a
# DatabaseError: the database answered.
_UNAVAILABLE = ("SQLITE_IOERR",)
_CONFIGURATION = ("SQLITE_CANTOPEN", "SQLITE_NOTADB", "SQLITE_PERM")
_CONFLICT = ("SQLITE_BUSY", "SQLITE_LOCKED")
_VALUES = ("SQLITE_TOOBIG", "SQLITE_MISMATCH", "SQLITE_RANGE")


def _translate(error: sqlite3.Error, entity: str | None, key: Any) -> DataLayerError:
    code = getattr(error, "sqlite_errorname", "") or ""
    message = str(error)
    kind = _CONSTRAINTS.get(code)
    if kind is not None:
        detail = _COLUMNS.search(message)
        target = detail.group(1) if detail else None
        if kind is CheckViolationError:
            # "CHECK constraint failed: ck_tasks_status" names the constraint.
            return CheckViolationError(entity, key, target)
        if kind is DuplicateKeyError and target:
            return DuplicateKeyError(entity, key, _unique_constraint_for(target), detail=target)
        if kind is NotNullViolationError:
            return NotNullViolationError(entity, key, None, detail=f"{target} is required")
        # SQLite does not say which foreign key failed; the unit of work
        # works it out when it knows the row (see executor.UnitExecutor).
        return kind(entity, key, None)
    if code.startswith("SQLITE_READONLY"):
        return ReadOnlyError(f"{message}: this unit of work is read-only")
    if code == "SQLITE_AUTH":
        # Only the read-only guard (_Guard) refuses statements as they are prepared.
        return ReadOnlyError(
            f"{message}: a read-only unit of work cannot set a PRAGMA, nor attach a database"
        )
    if code.startswith(_CONFLICT):
        return TransactionConflictError(
            f"{message}: another connection held the write lock for longer than "
            "busy_timeout; retry the unit of work or raise busy_timeout"
        )
    if code.startswith(_UNAVAILABLE):
        return DatabaseUnavailableError(f"cannot use the SQLite database: {message}")
    if code.startswith(_CONFIGURATION):
        return DatabaseConfigurationError(f"cannot open the SQLite database: {message}")
    if code.startswith(_VALUES) or "too many SQL variables" in message:
        return ValidationError(f"{entity or 'value'} rejected by SQLite: {message}")
    missing = _NO_TABLE.search(message)
    if missing:
        return SchemaNotReadyError(missing.group(1))
    return DatabaseError(f"SQLite refused the statement: {message}", code=code or None)


def _unique_constraint_for(columns_text: str) -> str | None:
    """Map SQLite's "tasks.id, tasks.x" onto the named constraint it came from."""
    pairs = [part.strip().split(".", 1) for part in columns_text.split(",")]
    if not pairs or any(len(pair) != 2 for pair in pairs):
        return None
    table = Base.metadata.tables.get(pairs[0][0])
    if table is None:
        return None
    columns = {pair[1] for pair in pairs}
    if {c.name for c in table.primary_key.columns} == columns:
        return str(table.primary_key.name)
    for constraint in table.constraints:
        names = {c.name for c in getattr(constraint, "columns", ())}
        if names == columns and constraint.name and constraint is not table.primary_key:
            return str(constraint.name)
    for index in table.indexes:
        if index.unique and {c.name for c in index.columns} == columns:
            return str(index.name)
    return None
