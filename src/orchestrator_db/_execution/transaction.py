"""A unit of work's connection and transaction.

A session hands out its connection through a transaction of its own, whose
bookkeeping costs a large share of a primary-key read or a one-row update.
So a unit checks its connection out itself (:class:`OwnConnection`), when
the first statement needs it, and binds its session to it: statements sent
straight to the driver then cost no session bookkeeping, while anything the
session runs uses the same connection. A read-only unit's statements each
commit on their own (in autocommit on PostgreSQL, with no BEGIN on SQLite);
a write unit begins its transaction as it checks its connection out, and its
session joins that transaction when it runs anything itself. One unit of
work, one pooled connection, either way.

Statements of one unit take turns (:class:`Turn`), and what a transaction
announced is told to this process's waiters once it commits (:class:`Notices`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from orchestrator_db._execution import greenlets
from orchestrator_db.errors import InternalError

if TYPE_CHECKING:
    from orchestrator_db._execution.executor import Executor


class NeedsTransaction(BaseException):
    """Raised in a one-statement unit (see
    :class:`~orchestrator_db.repositories.base.Plan`) by an operation that
    finds, having written nothing, that it needs more than its one
    statement: the call runs again in a write unit. Never leaves the package.
    Not an ``Exception``, as cancellation is not: an ``except Exception`` (or
    ``DataLayerError``) in the operation lets it through, and the error
    boundary passes it on unchanged."""

    def __init__(self) -> None:
        super().__init__("the operation needs a transaction")


def second_statement() -> InternalError:
    """The error of an operation declared one statement that sent a second."""
    return InternalError(
        "an operation declared one statement sent a second one (its first "
        "committed on its own): declare it a write, or make it call "
        "needs_transaction() before it"
    )


#: How :meth:`OwnConnection.end` ends a transaction.
Ending = Literal["commit", "rollback", "close", "invalidate"]

#: ``session.info`` key: the connection whose transaction the session joined.
JOINED = "orchestrator_db_joined"


class Turn:
    """A lock its holder may take again (the session's own methods call one
    another): statements of one unit, awaited together, run one at a time."""

    __slots__ = ("_depth", "_lock", "_owner")

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._owner: asyncio.Task[Any] | None = None
        self._depth = 0

    async def acquire(self) -> None:
        task = asyncio.current_task()
        if self._owner is task and task is not None:
            self._depth += 1
            return
        await self._lock.acquire()
        self._owner, self._depth = task, 1

    def release(self) -> None:
        self._depth -= 1
        if not self._depth:
            self._owner = None
            self._lock.release()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()


class OwnConnection:
    """The connection a unit of work checks out for itself, rather than
    through its session (whose transaction costs more than many of the
    statements it would hold).

    Nothing is checked out until a statement needs it. A read-only unit's
    connection is in autocommit (or sends no BEGIN); a write unit's
    (``begins``) begins its transaction as it is checked out, and the session,
    bound to it from then on, joins that transaction when it runs anything
    itself (``join_transaction_mode="control_fully"``: a flush, an ORM
    query, the caller's statements). :meth:`end` commits or rolls back what
    ran on it, whichever of the two ran it, and gives it back.
    """

    def __init__(self, engine: AsyncEngine, session: AsyncSession, *, begins: bool) -> None:
        self._engine = engine
        self._session = session
        self._session_bind = session.sync_session.bind
        self.begins = begins
        self.connection: AsyncConnection | None = None

    async def checkout(self) -> AsyncConnection:
        if self.connection is None:
            # One greenlet, the connection wrapped as it comes: a third of
            # what AsyncEngine.connect() costs, a large share of a one-row call.
            connect = _connect_and_begin if self.begins else _connect
            connection = AsyncConnection(
                self._engine, await greenlets.run(connect, self._engine.sync_engine)
            )
            if self.connection is not None:
                # Another statement of this unit checked one out meanwhile
                # (statements awaited together): keep to one connection.
                await connection.close()
            else:
                self.connection = connection
                # Whatever the session runs from now on runs on it.
                self._session.sync_session.bind = connection.sync_connection
        return self.connection

    def end(self, how: Ending, notices: Notices) -> None:
        """End a write unit's transaction as ``how`` says and give its
        connection back, in one greenlet. The session ends it when it joined
        it; else the connection does, then the session (whose commit tells
        the notices: nobody is told of work before it is committed).
        ``close`` rolls back as the session's ``close()`` does, leaving its
        objects loaded; ``invalidate`` drops the connection."""
        connection = self.connection
        assert connection is not None
        sync = connection.sync_connection
        assert sync is not None
        session = self._session.sync_session
        try:
            if how == "commit" and (session.new or session.dirty or session.deleted):
                session.flush()  # into the connection's transaction
            joined = session.info.get(JOINED) is sync
            if how == "commit":
                if not joined and sync.in_transaction():
                    sync.commit()
                if joined or session.in_transaction():
                    session.commit()  # the connection's too, when joined
                else:
                    notices.committed()
                return
            notices.forget()
            if how == "invalidate":
                sync.invalidate()
            elif not joined and sync.in_transaction():
                sync.rollback()
            if joined or session.in_transaction():
                (session.rollback if how == "rollback" else session.close)()
            elif how == "rollback":
                # Objects the session held from before (refreshed by direct
                # statements since) are read again, as a rollback of the
                # session's own would have them.
                session.expire_all()
        finally:
            self.connection = None
            session.bind = self._session_bind
            sync.close()

    async def release(self) -> None:
        """Give the connection back; the session, reset before this, is bound
        as it was made (it may be used again)."""
        connection, self.connection = self.connection, None
        self._session.sync_session.bind = self._session_bind
        if connection is not None and connection.sync_connection is not None:
            await greenlets.run(connection.sync_connection.close)  # AsyncConnection.close's


def _connect(engine: Engine) -> Connection:
    return engine.connect()


def _connect_and_begin(engine: Engine) -> Connection:
    connection = engine.connect()
    try:
        connection.begin()
    except BaseException:
        connection.close()
        raise
    return connection


class Notices:
    """The channels a transaction announced work on, told to this process's
    waiters once it commits (:meth:`committed`); forgotten if it does not."""

    def __init__(self, executor: Executor) -> None:
        self._executor = executor
        self._channels: set[str] = set()
        #: Tasks rescued from expired leases, counted once committed.
        self.rescued = 0

    async def announce(self, channel: str) -> None:
        if channel in self._channels:
            return
        statement = self._executor.backend.notify_statement()
        if statement is not None:
            await self._executor.rows(statement, {"channel": channel})
        self._channels.add(channel)

    def committed(self) -> None:
        channels, self._channels = self._channels, set()
        rescued, self.rescued = self.rescued, 0
        signals = self._executor.signals
        if channels and signals is not None:
            signals.wake(channels)
        observer = self._executor.observer
        if rescued and observer is not None:
            observer.rescued(rescued)

    def forget(self) -> None:
        self._channels.clear()
        self.rescued = 0
