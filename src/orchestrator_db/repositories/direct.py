"""Statements sent straight to the driver, around SQLAlchemy's execute.

SQLAlchemy's execute path costs more than many of the statements it runs: a
greenlet hop, the DBAPI adapter's bookkeeping and a Core result add ~100 us
to a primary-key read that PostgreSQL answers in ~120 us over loopback, and
~120 us to a queue statement SQLite runs in ~50 us. For the statements on
the hot paths (``get`` by primary key, the queue's claim and completion),
the repositories hand the SQL SQLAlchemy compiled for the dialect to the
driver themselves, converting values with the columns' own bind and result
processors, so what is sent and what comes back are exactly what SQLAlchemy
would have sent and returned.

This is only done where nothing is lost by going around SQLAlchemy:

- nobody observes statements: ``echo`` and the ``sqlalchemy.engine`` INFO log
  are off, no execute, cursor-execute or ``handle_error`` listener is set and
  no ``schema_translate_map`` applies, so logging and instrumentation still
  see every statement they ask to see;
- the statement needs no per-execution rewriting (expanding ``IN`` lists);
- the transaction needs nothing from SQLAlchemy: on SQLite the package's own
  adapter runs the statement, with the unit of work's pending BEGIN and its
  lock waits; on PostgreSQL the unit is read-only (autocommit) or its
  transaction has already begun, and the statement joins it.

Two differences remain, by design: these are Core statements run on the
unit's connection, so a session's ``do_orm_execute`` hook does not see them
(as it never sees ``connection.execute``), and on PostgreSQL asyncpg's own
statement cache serves them rather than SQLAlchemy's (which matters behind
PgBouncer in transaction mode, where SQLAlchemy advises turning both off).

Errors are wrapped as SQLAlchemy wraps them (``DBAPIError`` around the
driver's, ``StatementError`` for a value the bind processors refuse), and a
connection found dead is invalidated, so nothing downstream can tell which way
a statement went.
"""

from __future__ import annotations

import collections
import logging
import sqlite3
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.expression import Executable

from orchestrator_db._aiosqlite_adapter import OneHopConnection
from orchestrator_db.error_translation import translate
from orchestrator_db.errors import DatabaseUnavailableError

Processor = Callable[[Any], Any]
#: Runs compiled SQL with positional arguments; returns the rows.
Fetch = Callable[[str, Sequence[Any]], Awaitable[Sequence[Sequence[Any]]]]

#: Engine events that see statements; with any listener on (or one for the
#: dialect's ``handle_error``), statements go through SQLAlchemy.
_OBSERVERS = ("before_execute", "after_execute", "before_cursor_execute", "after_cursor_execute")


@dataclass(frozen=True)
class DirectStatement:
    """A statement compiled for one dialect, with its value conversions."""

    sql: str
    names: tuple[str, ...]  # bind names, in the driver's positional order
    binds: tuple[tuple[int, Processor], ...]  # the arguments that need converting
    defaults: Mapping[str, Any]  # values bound in the statement itself
    results: tuple[tuple[int, Processor], ...]  # the result columns that need converting
    row_type: Any  # a named tuple of the result columns, like SQLAlchemy's Row

    async def rows(self, fetch: Fetch, params: Mapping[str, Any] | None) -> list[Any]:
        values = {**self.defaults, **params} if params else self.defaults
        try:
            arguments = [values[name] for name in self.names]
            for position, process in self.binds:
                arguments[position] = process(arguments[position])
        except (LookupError, TypeError, ValueError) as error:
            # As SQLAlchemy reports a value its bind processors refuse.
            raise StatementError(str(error), self.sql, params, error) from error
        records = await fetch(self.sql, arguments)
        rows = []
        for record in records:
            row = list(record)
            for position, process in self.results:
                row[position] = process(row[position])
            rows.append(self.row_type._make(row))
        return rows


_compiled: weakref.WeakKeyDictionary[Dialect, dict[Executable, DirectStatement | None]] = (
    weakref.WeakKeyDictionary()
)


#: Statements are cached by identity: the repositories build theirs once. A
#: caller building a new statement per call gets it compiled per call instead
#: of an ever-growing cache.
CACHE_SIZE = 256


def compiled(statement: Executable, dialect: Dialect) -> DirectStatement | None:
    """``statement`` compiled for ``dialect`` (once per engine), or ``None``
    if it must go through SQLAlchemy."""
    per_dialect = _compiled.setdefault(dialect, {})
    try:
        return per_dialect[statement]
    except KeyError:
        direct = _compile(statement, dialect)
        if len(per_dialect) < CACHE_SIZE:
            per_dialect[statement] = direct
        return direct


def _compile(statement: Any, dialect: Dialect) -> DirectStatement | None:
    compiled = statement.compile(dialect=dialect)
    if compiled.post_compile_params or compiled.literal_execute_params:
        return None  # rewritten per execution (expanding IN): SQLAlchemy's job
    names = tuple(compiled.positiontup or ())
    binds = []
    for position, name in enumerate(names):
        process = compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            binds.append((position, process))
    defaults = {
        name: bind.effective_value for name, bind in compiled.binds.items() if not bind.required
    }
    columns = list(statement.exported_columns)
    results = []
    for position, column in enumerate(columns):
        process = column.type.dialect_impl(dialect).result_processor(dialect, None)
        if process is not None:
            results.append((position, process))
    row_type = collections.namedtuple(  # type: ignore[misc]
        "DirectRow", [column.key or f"column_{i}" for i, column in enumerate(columns)], rename=True
    )
    return DirectStatement(compiled.string, names, tuple(binds), defaults, tuple(results), row_type)


def driver_for(connection: AsyncConnection) -> Fetch | None:
    """How to run statements on ``connection`` directly, or ``None`` when
    they must go through SQLAlchemy (see the module)."""
    engine = connection.sync_engine
    # The engine's own logger: echo, or INFO on sqlalchemy.engine (with any
    # logging_name the engine was given).
    if engine.logger.isEnabledFor(logging.INFO):
        return None
    sync = connection.sync_connection
    if sync is None or sync.invalidated or sync.closed:
        return None  # SQLAlchemy reconnects or raises; the statement goes its way
    # A connection's own dispatch joins the engine's; reading it builds a
    # listener view per event on every new connection, so it is read only
    # when listeners were set on the connection itself.
    dispatches = (engine.dispatch, sync.dispatch) if sync._has_events else (engine.dispatch,)
    for dispatch in dispatches:
        if any(getattr(dispatch, name) for name in _OBSERVERS):
            return None
    if engine.dialect.dispatch.handle_error:  # custom error or disconnect handling
        return None
    if "schema_translate_map" in sync.get_execution_options():
        return None
    # The session has checked the connection out: reading it does no I/O
    # (AsyncConnection.get_raw_connection would cost a greenlet hop).
    raw = sync.connection
    adapted = raw.dbapi_connection
    if isinstance(adapted, OneHopConnection):
        return adapted.fetch_all
    driver = raw.driver_connection
    if connection.dialect.driver != "asyncpg" or driver is None or adapted is None:
        return None
    if adapted.autocommit or driver.is_in_transaction():
        return _asyncpg_fetch(driver)
    return None  # BEGIN is owed, and only SQLAlchemy's adapter may send it


async def fetch_rows(
    connection: AsyncConnection,
    statement: Executable,
    params: Mapping[str, Any] | None = None,
    *,
    session_connection: Callable[[], Awaitable[AsyncConnection]] | None = None,
) -> list[Any]:
    """The rows of a Core statement run on ``connection``: straight through
    the driver where this module allows, else by SQLAlchemy. Errors are the
    driver's or SQLAlchemy's, untranslated; a connection found dead is
    invalidated, as SQLAlchemy would have.

    ``session_connection`` gives the connection of the session's transaction,
    for a statement that goes through SQLAlchemy while ``connection`` is in
    no transaction (a unit's own connection, see
    :mod:`orchestrator_db.unit_connection`): run there, it would begin a
    transaction the session knows nothing of and so cannot roll back.
    """
    fetch = driver_for(connection)
    prepared = compiled(statement, connection.dialect) if fetch else None
    if fetch is None or prepared is None:
        if session_connection is not None and not connection.in_transaction():
            connection = await session_connection()
        return list((await connection.execute(statement, params)).all())
    try:
        return await prepared.rows(fetch, params)
    except StatementError:
        raise
    except Exception as error:
        # Raised as SQLAlchemy raises a driver's error, so callers (and the
        # translation to typed errors) see no difference. SQLAlchemy also
        # invalidates a connection it saw die; this statement went around
        # it, so the pool is told here.
        lost = connection_lost(connection, error)
        if lost:
            await connection.invalidate(error)
        raise DBAPIError.instance(
            prepared.sql, params, error, Exception, connection_invalidated=lost
        ) from error


def _asyncpg_fetch(driver: Any) -> Fetch:
    async def fetch(sql: str, arguments: Sequence[Any]) -> Sequence[Sequence[Any]]:
        records: Sequence[Sequence[Any]] = await driver.fetch(sql, *arguments)
        return records

    return fetch


def connection_lost(connection: AsyncConnection, error: BaseException) -> bool:
    """Whether ``error``, raised by a direct statement, means the connection
    is gone (SQLAlchemy would have invalidated it). A backend killed mid-
    transaction can surface as an asyncpg protocol error, so the driver's
    own state decides too, not only the exception's type. SQLite's errors
    never do: a file connection stays usable (SQLAlchemy agrees)."""
    if isinstance(error, sqlite3.Error):
        return False
    if isinstance(translate(error), DatabaseUnavailableError):
        return True
    sync = connection.sync_connection
    if sync is None or sync.invalidated or sync.closed:
        return False
    is_closed = getattr(sync.connection.driver_connection, "is_closed", None)
    return bool(is_closed is not None and is_closed())
