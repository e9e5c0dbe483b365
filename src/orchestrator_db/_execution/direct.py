"""The direct path: a Core statement compiled once (:mod:`.compiled`) and
handed straight to the driver, through the backend, where nothing would be
lost by going around SQLAlchemy's execute path.

Going around SQLAlchemy is done only where nothing is lost by it:

- nobody observes statements: ``echo`` and the ``sqlalchemy.engine`` INFO log
  are off, no execute, cursor-execute or ``handle_error`` listener is set and
  no ``schema_translate_map`` applies, so logging and instrumentation still
  see every statement they ask to see;
- the statement needs no per-execution rewriting (expanding ``IN`` lists);
- the transaction needs nothing from SQLAlchemy: on SQLite the package's own
  adapter runs the statement, with the unit of work's pending BEGIN and its
  lock waits; on PostgreSQL the connection is in autocommit (read-only units)
  or its transaction has already begun, and the statement joins it.

Two differences remain, by design: these are Core statements run on the
unit's connection, so a session's ``do_orm_execute`` hook does not see them
(as it never sees ``connection.execute``), and on PostgreSQL asyncpg's own
statement cache serves them rather than SQLAlchemy's.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.expression import Executable

from orchestrator_db._execution.backend import Backend, Fetch
from orchestrator_db._execution.compiled import compiled
from orchestrator_db.errors import DataLayerError

#: Engine events that see statements; with any listener on (or one for the
#: dialect's ``handle_error``), statements go through SQLAlchemy.
_OBSERVERS = ("before_execute", "after_execute", "before_cursor_execute", "after_cursor_execute")


def observed(engine: Engine) -> bool:
    """Whether ``engine``'s statements must go through SQLAlchemy: it logs
    them, or listeners see them or their errors (see the module)."""
    # The engine's own logger: echo, or INFO on sqlalchemy.engine (with any
    # logging_name the engine was given).
    if engine.logger.isEnabledFor(logging.INFO):
        return True
    if any(getattr(engine.dispatch, name) for name in _OBSERVERS):
        return True
    return bool(engine.dialect.dispatch.handle_error)  # custom error or disconnect handling


def direct_fetch(connection: AsyncConnection, backend: Backend) -> Fetch | None:
    """How to run statements on ``connection`` straight through its driver,
    or ``None`` when they must go through SQLAlchemy (see the module)."""
    engine = connection.sync_engine
    if observed(engine):
        return None
    sync = connection.sync_connection
    if sync is None or sync.invalidated or sync.closed:
        return None  # SQLAlchemy reconnects or raises; the statement goes its way
    # A connection's own dispatch joins the engine's; reading it builds a
    # listener view per event on every new connection, so it is read only
    # when listeners were set on the connection itself.
    if sync._has_events and any(getattr(sync.dispatch, name) for name in _OBSERVERS):
        return None
    if "schema_translate_map" in sync.get_execution_options():
        return None
    # Checked out already: reading it does no I/O (AsyncConnection's
    # get_raw_connection would cost a greenlet hop).
    return backend.fetcher(sync.connection)


async def fetch_rows(
    connection: AsyncConnection,
    backend: Backend,
    statement: Executable,
    params: Mapping[str, Any] | None = None,
    *,
    session_connection: Callable[[], Awaitable[AsyncConnection]] | None = None,
) -> list[Any]:
    """The rows of a Core statement run on ``connection``: straight through
    the driver where the module allows, else by SQLAlchemy. Errors are the
    driver's or SQLAlchemy's, untranslated; a connection found dead is
    invalidated, and its error marked so, as SQLAlchemy would have.

    ``session_connection`` gives the connection of the session's transaction,
    for a statement that goes through SQLAlchemy while ``connection`` is in
    no transaction (a unit's :class:`OwnConnection`): run there, it would
    begin a transaction the session knows nothing of and so cannot roll back.
    """
    fetch = direct_fetch(connection, backend)
    prepared = compiled(statement, connection.dialect) if fetch else None
    if fetch is None or prepared is None:
        if session_connection is not None and not connection.in_transaction():
            connection = await session_connection()
        return list((await connection.execute(statement, params)).all())
    try:
        return await prepared.rows(fetch, params)
    except DataLayerError:
        raise
    except Exception as error:
        # SQLAlchemy invalidates a connection it sees die; this statement
        # went around it, so the pool is told here.
        sync = connection.sync_connection
        raw = None if sync is None or sync.invalidated or sync.closed else sync.connection
        lost = backend.connection_lost(raw, error)
        if lost:
            await connection.invalidate(error)
        raise sa_exc.DBAPIError.instance(
            prepared.sql, None, error, Exception, connection_invalidated=lost
        ) from error
    except BaseException as error:
        # Cancelled (or interrupted) mid-statement, as SQLAlchemy treats an
        # exit exception: the driver's state is unknown (a BEGIN may have
        # reached the server unrecorded), so the connection is dropped
        # rather than given back. Synchronously: no await may follow here.
        sync = connection.sync_connection
        if sync is not None and not sync.invalidated:
            sync.invalidate(error)
        raise
