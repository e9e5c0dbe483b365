"""A leaner DBAPI adapter for aiosqlite: one thread hop per statement.

aiosqlite runs each SQLite connection in a worker thread; every ``await`` on
it is a round trip to that thread (80-90 us on a small machine, several times
the cost of an indexed SELECT). SQLAlchemy's stock adapter spends four hops on
a SELECT (open cursor, execute, fetch, close) and two ROLLBACKs when a
connection goes back to the pool after a transaction.

This adapter runs the whole statement (cursor, execute, fetch, close) as one
function in the worker thread, sends a transaction's BEGIN in the same hop as
its first statement, and skips COMMIT/ROLLBACK when SQLite reports no open
transaction. The SQL, the parameters, the results and the exceptions are
exactly those of the stock adapter; only the number of hops changes.

Inline execution (``sqlite_execution="inline"``) goes further: the statement
runs on the event loop's own thread, with no hop at all. A statement then
holds the event loop for as long as SQLite works on it (tens of
microseconds for the queue's statements, milliseconds for a large bulk
insert or a WAL checkpoint), in exchange for a unit of work costing 30-45%
less. Waiting for the write lock must not hold the loop, so inline
connections have no busy timeout in C: a BEGIN that finds the database
locked returns at once, and the adapter retries it after an asyncio sleep,
on SQLite's own schedule, until ``busy_timeout`` has passed. Inline
statements never suspend, so transactions yield to the event loop as they
begin, at least once a millisecond, for the other coroutines' sake.

It relies on two internals of aiosqlite (``Connection._execute`` and
``Connection._conn``, stable since 0.17); :func:`dbapi` returns ``None`` when
they are missing, and the stock adapter is used instead.
"""

from __future__ import annotations

import asyncio
import collections
import sqlite3
import threading
import time
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util import immutabledict
from sqlalchemy.util.concurrency import await_

_Outcome = tuple[Any, list[Any], int, Any, bool]

#: Inline execution holds the event loop at most about this long (seconds)
#: between two yields of transactions that begin back to back.
YIELD_INTERVAL = 0.001
#: When this thread's inline transactions last yielded (one loop per thread).
_yielded = threading.local()


#: Seconds between attempts to take a lock, as SQLite's own busy handler
#: waits (without its 50 and 100 ms steps: a lock is rarely held that long).
_LOCK_RETRY_DELAYS = (0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.025)


def _run_statement(
    connection: sqlite3.Connection, begin: str | None, operation: str, parameters: Any, many: bool
) -> _Outcome:
    """Runs in aiosqlite's worker thread (or, inline, in the caller's)."""
    if begin is not None:
        connection.execute(begin)
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        return description, rows, cursor.rowcount, cursor.lastrowid, connection.in_transaction
    finally:
        cursor.close()


def _attempt(
    connection: sqlite3.Connection, begin: str | None, operation: str, parameters: Any, many: bool
) -> _Outcome | sqlite3.OperationalError:
    """Run a statement inline; return (rather than raise) a lock conflict
    that may be retried: one met before anything of the transaction ran."""
    # A statement that opens the transaction, or a single autocommit
    # statement, has done nothing when it finds the database locked. An
    # autocommit executemany may have committed some of its rows.
    retryable = begin is not None or (not many and not connection.in_transaction)
    try:
        return _run_statement(connection, begin, operation, parameters, many)
    except sqlite3.OperationalError as error:
        if not retryable or error.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
            raise
        if begin is not None and connection.in_transaction:
            connection.rollback()  # BEGIN DEFERRED ran; the first read did not
        return error


class OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    """Buffers the whole result in the single hop that executes the statement."""

    __slots__ = ("_description", "_lastrowid", "_rowcount")
    _awaitable_cursor_close = False

    def __init__(self, adapt_connection: OneHopConnection) -> None:
        # No aiosqlite cursor is opened: the statement brings its own.
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._soft_closed_memoized = immutabledict()
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: Any = None

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> Any:
        return self._lastrowid

    async def _async_soft_close(self) -> None:
        return None

    def close(self) -> None:
        self._rows.clear()

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        try:
            return await_(self._run(operation, parameters, many=False))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        try:
            return await_(self._run(operation, seq_of_parameters, many=True))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    async def _run(self, operation: Any, parameters: Any, *, many: bool) -> None:
        adapt = self._adapt_connection
        assert isinstance(adapt, OneHopConnection)
        outcome = await adapt.run(operation, parameters, many=many)
        self._description, rows, self._rowcount, self._lastrowid, _ = outcome
        self._rows = collections.deque(rows)


async def _run_inline(
    connection: sqlite3.Connection,
    begin: str | None,
    operation: str,
    parameters: Any,
    many: bool,
    lock_timeout: float,
) -> _Outcome:
    starts = begin is not None or not connection.in_transaction
    if starts and time.monotonic() - getattr(_yielded, "at", 0.0) >= YIELD_INTERVAL:
        # Inline statements never suspend, so a coroutine looping over units
        # of work would never let the others run (a worker's heartbeat, say).
        # Transactions yield to the event loop where they begin (a statement
        # outside any: a transaction of its own), at least every
        # YIELD_INTERVAL: a yield per transaction would cost a loop
        # iteration (a few percent of a queue task) for no better latency.
        await asyncio.sleep(0)
        _yielded.at = time.monotonic()
    deadline: float | None = None
    attempt = 0
    while True:
        outcome = _attempt(connection, begin, operation, parameters, many)
        if not isinstance(outcome, sqlite3.OperationalError):
            return outcome
        now = time.monotonic()
        if deadline is None:
            deadline = now + lock_timeout
        if now >= deadline:
            raise outcome
        delay = _LOCK_RETRY_DELAYS[min(attempt, len(_LOCK_RETRY_DELAYS) - 1)]
        await asyncio.sleep(min(delay, deadline - now))
        attempt += 1


class OneHopConnection(AsyncAdapt_aiosqlite_connection):
    """Knows whether SQLite has a transaction open, to skip empty COMMITs and
    ROLLBACKs, and holds a BEGIN back until the statement it precedes."""

    __slots__ = ("_dbapi_inline", "_in_transaction", "_lock_timeout", "_pending_begin")
    _cursor_cls = OneHopCursor  # type: ignore[assignment]

    def __init__(self, dbapi: OneHopDBAPI, connection: Any) -> None:
        super().__init__(dbapi, connection)
        self._dbapi_inline = dbapi.inline
        self._lock_timeout = dbapi.lock_timeout
        self._in_transaction = True  # unknown until the first statement: be safe
        self._pending_begin: str | None = None

    async def run(self, operation: str, parameters: Any, *, many: bool = False) -> _Outcome:
        """Run one statement: the pending BEGIN first, in the same hop (or
        inline), waiting for the write lock as the module describes. Raises
        sqlite3's own exceptions."""
        async with self._execute_mutex:
            begin, self._pending_begin = self._pending_begin, None
            connection = self._connection._conn
            if self._dbapi_inline:
                outcome = await _run_inline(
                    connection, begin, operation, parameters, many, self._lock_timeout
                )
            else:
                outcome = await self._connection._execute(
                    _run_statement, connection, begin, operation, parameters, many
                )
        self._in_transaction = outcome[4]
        return outcome

    async def fetch_all(self, operation: str, parameters: Any) -> list[Any]:
        """The rows of one statement run as :meth:`run` runs it (for
        :mod:`orchestrator_db._execution.executor`)."""
        return (await self.run(operation, parameters))[1]

    def defer_begin(self, statement: str) -> None:
        """Run ``statement`` (a BEGIN) just before the next statement, in its hop.

        A BEGIN IMMEDIATE that cannot get the lock then fails as that
        statement, which is where the unit of work would have waited anyway.
        """
        self._pending_begin = statement
        self._in_transaction = True

    def commit(self) -> None:
        if self._pending_begin is not None:
            self._pending_begin = None  # nothing ran: nothing to commit
        elif self._in_transaction:
            self._end_transaction(commit=True)
        self._in_transaction = False

    def rollback(self) -> None:
        if self._pending_begin is not None:
            self._pending_begin = None
        elif self._in_transaction:
            self._end_transaction(commit=False)
        self._in_transaction = False

    def _end_transaction(self, *, commit: bool) -> None:
        if not self._dbapi_inline:
            if commit:
                super().commit()
            else:
                super().rollback()
            return
        # In WAL mode a COMMIT needs no lock it does not already hold: it
        # cannot meet a locked database, so it needs no retry.
        connection = self._connection._conn
        try:
            if commit:
                connection.commit()
            else:
                connection.rollback()
        except Exception as error:
            self._handle_exception(error)


class OneHopDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """``inline``: run statements on the event loop's thread, waiting up to
    ``lock_timeout`` seconds for a locked database (see the module's doc)."""

    def __init__(self, *, inline: bool = False, lock_timeout: float = 30.0) -> None:
        super().__init__(aiosqlite, sqlite3)
        self.inline = inline
        self.lock_timeout = lock_timeout

    def connect(self, *arg: Any, **kw: Any) -> OneHopConnection:
        if "async_creator_fn" in kw:
            return OneHopConnection(self, super().connect(*arg, **kw)._connection)
        connection = self.aiosqlite.connect(*arg, **kw)
        # aiosqlite < 0.22 connections are threads; later ones hold one.
        thread = connection if isinstance(connection, threading.Thread) else connection._thread
        thread.daemon = True  # as SQLAlchemy's adapter: never block interpreter exit
        try:
            return OneHopConnection(self, await_(connection))
        except BaseException:
            # When opening fails, aiosqlite queues the stop of its worker thread
            # without awaiting it; if the event loop closes first, the thread
            # dies with "Event loop is closed". Its remaining work is trivial:
            # wait for it while the loop is still open.
            thread.join(timeout=1.0)
            raise


def dbapi(*, inline: bool = False, lock_timeout: float = 30.0) -> OneHopDBAPI | None:
    """The adapter module to pass as ``create_engine(module=...)``, if usable."""
    if not (hasattr(aiosqlite.Connection, "_execute") and hasattr(aiosqlite.Connection, "_conn")):
        return None
    return OneHopDBAPI(inline=inline, lock_timeout=lock_timeout)
