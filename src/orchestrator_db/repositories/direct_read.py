"""Primary-key reads sent straight to asyncpg, around SQLAlchemy's execute.

A point read on PostgreSQL is one round trip (~100 us on loopback), and
SQLAlchemy's execute path adds as much again: a greenlet hop, the asyncpg
adapter's bookkeeping and a Core result per statement. For the read the
repositories make most, ``get`` by primary key, the package hands the SQL
SQLAlchemy compiled for the dialect to the driver itself, converting values
with the columns' own bind and result processors, so what comes back is
exactly what SQLAlchemy would have returned.

It is only used where nothing is lost by going around SQLAlchemy:

- nobody observes statements (``echo`` and the ``sqlalchemy.engine`` INFO
  log are off, and no ``before/after_cursor_execute`` listener is set), so
  logging and instrumentation still see every statement they ask to see;
- no BEGIN is owed: the unit of work is read-only (autocommit), or its
  transaction has already begun, which the read then joins.

Errors come out as asyncpg's own exceptions, which
:func:`orchestrator_db.error_translation.translate` reads as it reads those
SQLAlchemy wraps; the caller invalidates a connection that was lost.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

Processor = Callable[[Any], Any]

_ENGINE_LOG = logging.getLogger("sqlalchemy.engine.Engine")


@dataclass(frozen=True)
class DirectRead:
    """A statement compiled for one dialect, with its value conversions."""

    sql: str
    binds: tuple[tuple[str, Processor | None], ...]  # in the driver's positional order
    results: tuple[tuple[int, Processor], ...]  # the columns that need converting

    async def fetch_row(self, driver: Any, params: Mapping[str, Any]) -> list[Any] | None:
        arguments = [
            params[name] if process is None else process(params[name])
            for name, process in self.binds
        ]
        record = await driver.fetchrow(self.sql, *arguments)
        if record is None:
            return None
        values = list(record)
        for position, process in self.results:
            values[position] = process(values[position])
        return values


_compiled: weakref.WeakKeyDictionary[Dialect, dict[Select[Any], DirectRead]] = (
    weakref.WeakKeyDictionary()
)


def direct_read(statement: Select[Any], dialect: Dialect) -> DirectRead:
    """``statement`` compiled for ``dialect``; compiled once per engine."""
    per_dialect = _compiled.setdefault(dialect, {})
    read = per_dialect.get(statement)
    if read is None:
        read = per_dialect[statement] = _compile(statement, dialect)
    return read


def _compile(statement: Select[Any], dialect: Dialect) -> DirectRead:
    compiled = statement.compile(dialect=dialect)
    # Expanding (IN) or literal-rendered parameters are rewritten per
    # execution by SQLAlchemy; a direct read has no such step.
    if compiled.post_compile_params or compiled.literal_execute_params:
        raise ValueError(f"a direct read takes plain bound parameters only: {statement}")
    binds = tuple(
        (name, compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect))
        for name in compiled.positiontup or ()
    )
    processors = [
        column.type.dialect_impl(dialect).result_processor(dialect, None)
        for column in statement.selected_columns
    ]
    results = tuple(
        (position, process) for position, process in enumerate(processors) if process is not None
    )
    return DirectRead(compiled.string, binds, results)


def driver_for(connection: AsyncConnection) -> Any | None:
    """The asyncpg connection to read ``connection``'s data through directly,
    or ``None`` when the read must go through SQLAlchemy (see the module)."""
    if connection.dialect.driver != "asyncpg":
        return None
    engine = connection.sync_engine
    if engine.echo or _ENGINE_LOG.isEnabledFor(logging.INFO):
        return None
    sync = connection.sync_connection
    if sync is None or sync.invalidated or sync.closed:
        return None  # SQLAlchemy reconnects or raises; the read goes its way
    for dispatch in (engine.dispatch, sync.dispatch):
        if dispatch.before_cursor_execute or dispatch.after_cursor_execute:
            return None
    # The session has checked the connection out: reading it does no I/O
    # (AsyncConnection.get_raw_connection would cost a greenlet hop).
    raw = sync.connection
    driver = raw.driver_connection
    if driver is None:
        return None
    if raw.dbapi_connection is not None and raw.dbapi_connection.autocommit:
        return driver
    return driver if driver.is_in_transaction() else None
