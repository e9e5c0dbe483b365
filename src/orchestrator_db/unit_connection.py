"""How a repository finds the connection of its unit of work.

A session hands out its connection through a transaction of its own, and
the bookkeeping of that transaction, as it begins and as the session closes,
costs tens of microseconds: a large share of a primary-key read that
PostgreSQL answers over loopback in ~120 us. Units whose every
statement commits on its own (PostgreSQL's read-only units run in autocommit)
have no transaction for the session to keep, so they check their connection
out themselves, when the first statement needs it, and bind the session to
it: statements sent straight to the driver (see :mod:`.repositories.direct`)
then cost no session bookkeeping, while anything run through the session uses
the same connection. One unit of work, one pooled connection, either way.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

#: Where a session keeps the connection :func:`unit_connection` gave last.
_GIVEN = "orchestrator_db.connection"
#: Where a session of a unit of work keeps its :class:`OwnConnection`.
_OWN = "orchestrator_db.own_connection"


class OwnConnection:
    """The connection a unit of work in autocommit checks out for itself.

    Created by the unit of work when it starts; nothing is checked out until
    a statement needs it, and :meth:`release` returns it to the pool.
    """

    def __init__(self, engine: AsyncEngine, session: AsyncSession) -> None:
        self._engine = engine
        self._session = session
        self._session_bind = session.sync_session.bind
        self.connection: AsyncConnection | None = None
        session.info[_OWN] = self

    async def checkout(self) -> AsyncConnection:
        if self.connection is None:
            connection = await self._engine.connect()
            if self.connection is not None:
                # Another statement of this unit checked one out meanwhile
                # (statements awaited together): keep to one connection.
                await connection.close()
            else:
                self.connection = connection
                # Whatever the session runs from now on runs on it.
                self._session.sync_session.bind = connection.sync_connection
        return self.connection

    async def release(self) -> None:
        """Give the connection back; the session, reset by its unit of work
        before this, is bound as it was made (it may be used again)."""
        connection, self.connection = self.connection, None
        self._session.info.pop(_OWN, None)
        self._session.sync_session.bind = self._session_bind
        if connection is not None:
            await connection.close()


async def unit_connection(session: AsyncSession) -> AsyncConnection:
    """The connection ``session``'s unit of work runs its statements on.

    Asking the session costs a greenlet hop even when it holds one already,
    so the one it gave last is reused while the transaction it gave it for is
    still active. A unit in autocommit with no session transaction going uses
    its own connection (see the module). Otherwise (the unit committed, or
    failed and awaits a rollback) the session is asked, and says so.
    """
    info = session.info
    transaction = session.sync_session.get_transaction()
    own: OwnConnection | None = info.get(_OWN)
    if own is not None:
        if transaction is None:
            return await own.checkout()
        # Once checked out it is the session's bind: the only connection the
        # session can hold. (A session transaction can exist without any
        # connection: adding an object to the session begins one.)
        if own.connection is not None and transaction.is_active:
            return own.connection
    if transaction is not None:
        given: tuple[Any, AsyncConnection] | None = info.get(_GIVEN)
        if given is not None and given[0] is transaction and transaction.is_active:
            return given[1]
    connection = await session.connection()
    info[_GIVEN] = (session.sync_session.get_transaction(), connection)
    return connection


def holds_no_connection(session: AsyncSession) -> bool:
    """Whether closing ``session`` only detaches its objects: it holds no
    connection, so there is nothing to roll back or give back, no I/O, and
    no need for a greenlet hop. True when it has begun nothing, or only the
    transaction that adding an object begins, on no connection but its unit's
    own one, which it has not used."""
    if not session.in_transaction():
        return True
    own: OwnConnection | None = session.info.get(_OWN)
    return own is not None and own.connection is not None and not own.connection.in_transaction()
