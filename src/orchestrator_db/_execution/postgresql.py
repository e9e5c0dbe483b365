"""The PostgreSQL backend: asyncpg, READ COMMITTED, read-only units in autocommit.

Write units run at READ COMMITTED (the server default); the repositories lock
rows (``FOR UPDATE``) where they read and then write. Read-only units use a
second pool in autocommit with ``default_transaction_read_only`` on: one
round trip per read instead of three (BEGIN, the query, ROLLBACK), and under
READ COMMITTED each statement sees a fresh snapshot anyway. Large batches are
inserted with ``COPY``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sqlalchemy import (
    Connection,
    Executable,
    Table,
    Text,
    bindparam,
    event,
    func,
    literal_column,
    select,
    text,
)
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection, PoolResetState

from orchestrator_db._execution.backend import Backend, Fetch, concealing
from orchestrator_db._execution.signals import CHANNELS, CHECK_TIMEOUT, Listener
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
    StatementTimeoutError,
    TransactionConflictError,
    ValidationError,
)
from orchestrator_db.settings import DatabaseSettings

#: From this many rows on, a bulk insert goes through COPY (binary), about
#: twice as fast as a pipelined executemany.
COPY_THRESHOLD = 100
#: Key of the advisory lock taken around every migration run, so that
#: processes starting at once apply each revision exactly once.
MIGRATION_LOCK_KEY = 0x6F72636864620001  # "orchdb" + 1
_MIGRATION_LOCK = text("SELECT pg_advisory_xact_lock(:key)")


class PostgreSQLBackend(Backend):
    name = "postgresql"
    names_foreign_keys = True

    def autocommit_reads(self, settings: DatabaseSettings) -> bool:
        # Behind PgBouncer a read-only unit is a BEGIN READ ONLY transaction:
        # nothing else makes it refuse writes without a startup parameter.
        return not settings.pgbouncer

    def autocommit_writes(self, settings: DatabaseSettings) -> bool:
        # Behind PgBouncer the statement timeout is each transaction's own
        # (see configure): a statement with none would run without it.
        return not (settings.pgbouncer and settings.statement_timeout is not None)

    def autocommit_options(self) -> dict[str, Any]:
        # Set on the driver's connection as it is checked out, and reset as it
        # comes back: no round trip either way.
        return {"isolation_level": "AUTOCOMMIT"}

    def read_only_options(self) -> dict[str, Any]:
        return {"postgresql_readonly": True}

    def engine_options(
        self, url: URL, settings: DatabaseSettings, *, read_only: bool
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        server_settings = {"application_name": settings.application_name}
        connect_args: dict[str, Any] = {"server_settings": server_settings}
        if settings.pgbouncer:
            # Any transaction may run on any server connection: nothing is
            # prepared by name (a name would clash with, or miss, another
            # client's on the next server), and asyncpg parses each
            # statement again in the message that runs it.
            connect_args.update(
                statement_cache_size=0,
                prepared_statement_cache_size=0,
                prepared_statement_name_func=_unnamed,
            )
        elif settings.statement_timeout is not None:
            server_settings["statement_timeout"] = _milliseconds(settings.statement_timeout)
        defaults: dict[str, Any] = {
            "pool_size": settings.pool_size if settings.pool_size is not None else 10,
            "max_overflow": settings.max_overflow if settings.max_overflow is not None else 20,
            "pool_recycle": self.recycle_seconds(settings),
            "pool_pre_ping": bool(settings.pool_pre_ping),
            "isolation_level": "READ COMMITTED",
        }
        enforced: dict[str, Any] = {"connect_args": connect_args}
        if read_only:
            if settings.pgbouncer:
                raise ValueError("read-only engines of their own are not made behind PgBouncer")
            asked = settings.extra_engine_options.get("connect_args", {})
            if "read-write" in (
                url.query.get("target_session_attrs"),
                asked.get("target_session_attrs"),
            ):
                # Every session of this engine is read-only by default, so no
                # host would pass for read-write: the primary is the one that
                # is no standby.
                connect_args["target_session_attrs"] = "primary"
            server_settings["default_transaction_read_only"] = "on"
            enforced["isolation_level"] = "AUTOCOMMIT"
            # In autocommit SQLAlchemy begins no transaction: its rollback
            # as a connection comes back would do nothing. (One begun as
            # SQL by the caller is ended by _end_stray_transaction.)
            defaults["pool_reset_on_return"] = None
        return defaults, enforced

    def configure(self, engine: AsyncEngine, settings: DatabaseSettings) -> None:
        timeout = settings.statement_timeout
        if settings.pgbouncer and timeout is not None:
            # Not a startup parameter behind PgBouncer: each transaction's own.
            setting = {"ms": _milliseconds(timeout)}

            def set_timeout(connection: Connection) -> None:
                connection.execute(_STATEMENT_TIMEOUT, setting)

            event.listen(engine.sync_engine, "begin", set_timeout)
        event.listen(engine.sync_engine.pool, "reset", _end_stray_transaction)
        event.listen(engine.sync_engine, "connect", _note_read_only)

    keeps_read_only = True

    async def before_stream(self, connection: AsyncConnection) -> None:
        sync = connection.sync_connection
        driver = None if sync is None or sync.invalidated else sync.connection.driver_connection
        if driver is not None and not driver.is_in_transaction():
            # A server-side cursor lives in a transaction: a read-only one,
            # which the pool rolls back as the unit gives the connection back
            # (see _end_stray_transaction).
            await driver.execute("BEGIN READ ONLY")

    async def keep_read_only(self, connection: AsyncConnection, *, text: bool) -> None:
        sync = connection.sync_connection
        if sync is None or sync.invalidated or sync.closed:
            return
        driver = sync.connection.driver_connection
        if driver is None:
            return
        if sync.connection.dbapi_connection.autocommit:  # type: ignore[union-attr]
            if sync.connection.info.get(_READ_ONLY) and not _still_read_only(driver):
                # The session is no longer read-only: nothing else may use it.
                await connection.invalidate()
                raise ReadOnlyError(
                    "a read-only unit of work turned default_transaction_read_only off: "
                    "its connection was closed"
                )
        elif text and not driver.is_in_transaction():
            # Behind PgBouncer the unit is a BEGIN READ ONLY transaction,
            # which SQL of the caller's ended (COMMIT, ROLLBACK): what follows
            # would run in the server's autocommit, read-write.
            await connection.invalidate()
            raise ReadOnlyError(
                "SQL of the caller's ended a read-only unit of work's transaction: "
                "its connection was closed"
            )
        if text and driver.is_in_transaction():
            # A transaction begun as SQL, or BEGIN READ ONLY behind PgBouncer:
            # SET TRANSACTION READ WRITE is allowed until its first query,
            # and going back to read-only always is.
            await driver.execute("SET TRANSACTION READ ONLY")

    def lock_migrations(self, connection: Connection) -> None:
        # Transaction-scoped: released as the migration commits.
        connection.execute(_MIGRATION_LOCK, {"key": MIGRATION_LOCK_KEY})

    def recycle_seconds(self, settings: DatabaseSettings) -> int:
        # Below the idle timeouts of common proxies and firewalls.
        return settings.pool_recycle if settings.pool_recycle is not None else 1800

    def fetcher(self, raw: PoolProxiedConnection) -> Fetch | None:
        adapted = raw.dbapi_connection
        driver = raw.driver_connection
        if driver is None or adapted is None:
            return None
        if adapted.autocommit:
            if raw.info.get(_READ_ONLY) and not _still_read_only(driver):
                # Turned writable in a way keep_read_only does not see.
                raise ReadOnlyError("a read-only unit's connection is no longer read-only")
            return _fetch(driver)
        if driver.is_in_transaction():
            return _fetch(driver)
        # A BEGIN is owed: SQLAlchemy's adapter sends it before its first
        # statement, and keeps the transaction it then commits or rolls back.
        # Asked to begin here (its own coroutine, no private state touched),
        # the adapter sends the very same BEGIN, and the statement goes
        # straight after it rather than through SQLAlchemy's execute path.
        begin = getattr(adapted, "_start_transaction", None)
        if begin is None:
            return None
        return _fetch(driver, begin)

    async def insert_many(
        self, connection: AsyncConnection, table: Table, sql: str, keys: Sequence[str], rows: Any
    ) -> None:
        if len(rows) < COPY_THRESHOLD:
            await connection.exec_driver_sql(sql, rows)
            return
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        if not driver.is_in_transaction():
            # COPY goes around SQLAlchemy, which begins lazily: make sure the
            # rows land in the unit of work's transaction, not in autocommit.
            await connection.exec_driver_sql("SELECT 1")
        names = [table.c[key].name for key in keys]
        await driver.copy_records_to_table(table.name, records=rows, columns=names)

    def notify_statement(self) -> Executable:
        return _NOTIFY

    def cannot_listen(self, settings: DatabaseSettings) -> str | None:
        if settings.pgbouncer:
            return "PgBouncer in transaction pooling mode cannot carry a session's LISTEN"
        return None

    async def listen(self, engine: AsyncEngine, wake: Callable[[str], None]) -> Listener:
        connection = await engine.connect()
        try:
            raw = await connection.get_raw_connection()
            listener = _PostgreSQLListener(connection, raw.driver_connection)
            for channel in CHANNELS:
                await listener.driver.add_listener(channel, listener.called(wake))
        except BaseException:
            await connection.close()
            raise
        return listener

    def left_in_transaction(self, connection: AsyncConnection) -> bool:
        sync = connection.sync_connection
        if sync is None or sync.invalidated or sync.closed:
            return False
        driver = sync.connection.driver_connection
        return driver is not None and bool(driver.is_in_transaction())

    def connection_lost(self, raw: PoolProxiedConnection | None, error: BaseException) -> bool:
        # A backend killed mid-transaction can surface as an asyncpg protocol
        # error, so the driver's own state decides too, not only the error.
        if isinstance(self.translate(error, None, None), DatabaseUnavailableError):
            return True
        if raw is None:
            return False
        is_closed = getattr(raw.driver_connection, "is_closed", None)
        return bool(is_closed is not None and is_closed())

    def start_call(self, raw: PoolProxiedConnection, *, read_only: bool) -> bool:
        # The read-only pool's connections are in autocommit already; a write
        # pool's is while the call holds it (the adapter's flag: no round trip).
        adapted: Any = raw.dbapi_connection
        if read_only or adapted.autocommit:
            return False
        adapted.autocommit = True
        return True

    def end_call(self, raw: PoolProxiedConnection) -> None:
        adapted: Any = raw.dbapi_connection
        adapted.autocommit = False

    def translate(
        self, error: BaseException, entity: str | None, key: Any
    ) -> DataLayerError | None:
        # SQLAlchemy's adapter raises its own error classes, carrying the
        # SQLSTATE, from asyncpg's; COPY raises asyncpg's own.
        cause = error.__cause__
        driver_error = cause if cause is not None and _is_asyncpg(cause) else error
        sqlstate = getattr(error, "sqlstate", None) or getattr(driver_error, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate:
            return _by_sqlstate(driver_error, sqlstate, entity, key)
        if not _is_asyncpg(driver_error) and not _is_adapter(error):
            return None
        message = str(driver_error)
        if "query arguments cannot exceed" in message:
            return ValidationError(
                f"{entity or 'statement'} rejected: {message} (PostgreSQL takes at most "
                "32,767 values in one statement)"
            )
        if isinstance(driver_error, ValueError | TypeError | OverflowError):
            # asyncpg's DataError: a value refused before it was sent (its
            # message quotes the value).
            return concealing(ValidationError(f"{entity or 'value'} rejected: {message}"))
        if type(driver_error).__name__ in _LOST or "closed" in message:
            # A protocol error after the backend died, or a closed connection.
            return DatabaseUnavailableError(f"lost the PostgreSQL connection: {message}")
        return None


POSTGRESQL = PostgreSQLBackend()

_STATEMENT_TIMEOUT = text("SELECT set_config('statement_timeout', :ms, true)")
_NOTIFY = select(func.pg_notify(bindparam("channel", type_=Text()), literal_column("''")))


class _PostgreSQLListener:
    """A connection held for ``LISTEN``: asyncpg calls back on each
    notification; a lost connection is no longer :attr:`alive`."""

    def __init__(self, connection: AsyncConnection, driver: Any) -> None:
        self.connection = connection
        self.driver = driver

    @property
    def alive(self) -> bool:
        return not self.driver.is_closed()

    async def answers(self) -> bool:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                await self.driver.execute("SELECT 1")
        except Exception:  # whatever it is, this connection is done with
            return False
        return True

    @staticmethod
    def called(wake: Callable[[str], None]) -> Callable[..., None]:
        def notified(_connection: Any, _pid: int, channel: str, _payload: str) -> None:
            wake(channel)

        return notified

    async def close(self) -> None:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                await self.connection.close()
        except TimeoutError:
            self.driver.terminate()  # a connection that no longer answers


def _milliseconds(seconds: float) -> str:
    # At least 1 ms: 0 would turn the timeout off.
    return str(max(1, round(seconds * 1000))) if seconds > 0 else "0"


def _unnamed() -> str:
    """The name of every statement SQLAlchemy prepares behind PgBouncer:
    the unnamed statement, which lives only until the next one is parsed."""
    return ""


def _end_stray_transaction(dbapi_connection: Any, record: Any, state: PoolResetState) -> None:
    """A connection in autocommit (read-only units) coming back to the pool
    inside a transaction begun as SQL (``text("BEGIN ...")``), which
    SQLAlchemy did not begin and so does not roll back: rolled back here,
    or the next unit would run in it (an old snapshot, a commit that ends
    nothing). A connection being dropped (not asyncio-safe) ends it anyway.
    One no longer read-only (the driver's own connection, ``run_sync``:
    ways around :meth:`PostgreSQLBackend.keep_read_only`) is dropped."""
    driver = getattr(dbapi_connection, "driver_connection", None)
    if not state.asyncio_safe or driver is None or not dbapi_connection.autocommit:
        return
    if record.info.get(_READ_ONLY) and not _still_read_only(driver):
        record.invalidate()
        return
    if driver.is_in_transaction():
        dbapi_connection.cursor().execute("ROLLBACK")


#: Pool record info: the connection was made read-only by its startup
#: parameters (the read-only units' pool).
_READ_ONLY = "orchestrator_db_read_only"


def _note_read_only(dbapi_connection: Any, record: Any) -> None:
    driver = getattr(dbapi_connection, "driver_connection", None)
    record.info[_READ_ONLY] = (
        driver is not None
        and getattr(driver.get_settings(), "default_transaction_read_only", None) == "on"
    )


def _still_read_only(driver: Any) -> bool:
    """Whether a read-only pool's connection still makes its transactions
    read-only: PostgreSQL 14 and later report the setting as it changes
    (SET, set_config(), SET SESSION CHARACTERISTICS), so no round trip."""
    return getattr(driver.get_settings(), "default_transaction_read_only", "on") == "on"


def _fetch(driver: Any, begin: Callable[[], Awaitable[None]] | None = None) -> Fetch:
    async def fetch(sql: str, arguments: Sequence[Any]) -> Sequence[Sequence[Any]]:
        if begin is not None and not driver.is_in_transaction():
            await begin()
        records: Sequence[Sequence[Any]] = await driver.fetch(sql, *arguments)
        return records

    return fetch


def _is_asyncpg(error: BaseException) -> bool:
    return type(error).__module__.startswith("asyncpg")


def _is_adapter(error: BaseException) -> bool:
    return type(error).__module__.startswith("sqlalchemy.dialects.postgresql")


# ------------------------------------------------------------------ errors

_CONSTRAINTS: dict[str, type[ConstraintViolationError]] = {
    "23505": DuplicateKeyError,
    "23503": ForeignKeyViolationError,
    "23514": CheckViolationError,
    "23502": NotNullViolationError,
}
# 40001 serialization_failure, 40P01 deadlock_detected, 55P03 lock_not_available
_CONFLICT = ("40001", "40P01", "55P03")
# 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now,
# 53300 too_many_connections (other class 53 errors, a full disk or memory,
# are DatabaseError: the server answered)
_UNAVAILABLE = ("57P01", "57P02", "57P03", "53300")
_RELATION = re.compile(r'relation "([^"]+)" does not exist')
# 3D000 invalid_catalog_name (no such database), class 28: the role or its
# password was refused
_CONFIGURATION = ("3D000",)
# 42P05 duplicate_prepared_statement, 26000 invalid_sql_statement_name: a
# named statement met another client's, or missed its own, on a server
# connection a pooler handed over.
_POOLED = ("42P05", "26000")
# asyncpg's errors, without a SQLSTATE, for a connection that is gone or
# whose protocol state was lost with its server.
_LOST = frozenset({"InternalClientError", "ProtocolError", "TargetServerAttributeNotMatched"})


def _by_sqlstate(
    driver_error: BaseException, sqlstate: str, entity: str | None, key: Any
) -> DataLayerError:
    # Only the primary message: asyncpg appends the server's DETAIL, which for
    # a CHECK or NOT NULL violation lists the whole row (a secret included).
    message = str(driver_error).split("\n", 1)[0]
    kind = _CONSTRAINTS.get(sqlstate)
    if kind is not None:
        constraint = getattr(driver_error, "constraint_name", None)
        detail = None
        if kind is NotNullViolationError:
            column = getattr(driver_error, "column_name", None)
            table = getattr(driver_error, "table_name", None)
            detail = f"{table}.{column} is required" if column else None
        elif kind is not CheckViolationError:
            detail = getattr(driver_error, "detail", None)  # the key, for unique and FKs
        return concealing(kind(entity, key, constraint, detail=detail))
    if sqlstate == "57014":
        return StatementTimeoutError(
            f"{message}: raise statement_timeout or make the statement cheaper"
        )
    if sqlstate == "25006":
        return ReadOnlyError(f"{message}: this unit of work is read-only")
    if sqlstate in _CONFLICT:
        return TransactionConflictError(
            f"{message}: the transaction conflicted with a concurrent one and "
            "was rolled back; retry the unit of work"
        )
    if sqlstate in _POOLED or (sqlstate == "08P01" and "startup parameter" in message):
        return DatabaseConfigurationError(
            f"{message}: the server looks like PgBouncer in transaction pooling "
            "mode; pass pgbouncer=True to Database (if it is set, something else "
            "shares the server connections' prepared statements)"
        )
    if sqlstate.startswith("08") or sqlstate in _UNAVAILABLE:
        return DatabaseUnavailableError(f"cannot use the PostgreSQL connection: {message}")
    if sqlstate.startswith("28") or sqlstate in _CONFIGURATION:
        return DatabaseConfigurationError(f"PostgreSQL refused the connection: {message}")
    if sqlstate == "42P01":
        table = getattr(driver_error, "table_name", None)
        found = _RELATION.search(message)
        return SchemaNotReadyError(table or (found.group(1) if found else message))
    if sqlstate.startswith(("22", "54")):
        # Data exceptions (a value out of range, NUL in text, a malformed
        # number...) and program limits (a value too large to index).
        return concealing(ValidationError(f"{entity or 'value'} rejected by PostgreSQL: {message}"))
    return DatabaseError(f"PostgreSQL refused the statement: {message}", code=sqlstate)
