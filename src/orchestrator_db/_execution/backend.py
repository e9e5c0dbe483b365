"""What differs between the database engines: one :class:`Backend` per engine.

A backend knows how to build its engines, how to send a compiled statement
straight to its driver, how to insert a large batch, whether a connection
died, and how its driver reports errors. Everything above the execution
layer asks its backend instead of comparing dialect names.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar

from sqlalchemy import Table
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection

from orchestrator_db.errors import DataLayerError
from orchestrator_db.settings import DatabaseSettings

#: Runs compiled SQL with positional arguments; returns the rows.
Fetch = Callable[[str, Sequence[Any]], Awaitable[Sequence[Sequence[Any]]]]


class Backend:
    """The engine-specific half of the execution layer (see the module)."""

    #: The SQLAlchemy dialect name (``"sqlite"``, ``"postgresql"``).
    name: ClassVar[str]
    #: Whether several transactions may write at once (PostgreSQL), so that
    #: read-then-write steps must lock rows; SQLite has one writer at a time.
    concurrent_writers: ClassVar[bool]
    #: Whether a constraint violation names the foreign key that failed
    #: (SQLite only says "FOREIGN KEY constraint failed").
    names_foreign_keys: ClassVar[bool]

    # ----------------------------------------------------------- engines

    def engine_options(
        self, url: URL, settings: DatabaseSettings, *, read_only: bool
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """``create_async_engine`` options: the defaults, which the user's
        ``extra_engine_options`` may change, and the options that enforce the
        package's guarantees (read-only units, timeouts), which they may not."""
        raise NotImplementedError

    def configure(self, engine: AsyncEngine) -> None:
        """Install what the engine needs on every connection (event listeners)."""

    #: Whether read-only units use an engine of their own, in autocommit (each
    #: statement its own transaction, so a unit checks its connection out
    #: itself: see :class:`~orchestrator_db._execution.executor.OwnConnection`),
    #: rather than the write engine with :meth:`read_only_options`.
    autocommit_reads: ClassVar[bool]

    def read_only_options(self) -> dict[str, Any]:
        """Execution options that make the write engine's transactions read-only."""
        return {}

    def recycle_seconds(self, settings: DatabaseSettings) -> int:
        """Seconds after which a pooled connection is replaced (-1: never)."""
        raise NotImplementedError

    # ------------------------------------------------------- statements

    def fetcher(self, raw: PoolProxiedConnection) -> Fetch | None:
        """How to run statements straight on ``raw``'s driver connection, or
        ``None`` when they must go through SQLAlchemy on it now."""
        return None

    async def insert_many(
        self, connection: AsyncConnection, table: Table, sql: str, keys: Sequence[str], rows: Any
    ) -> None:
        """Insert ``rows`` (tuples binding ``keys`` in order) with ``sql``, in
        the connection's current transaction."""
        await connection.exec_driver_sql(sql, rows)

    def connection_lost(self, connection: AsyncConnection, error: BaseException) -> bool:
        """Whether ``error``, raised by a statement sent straight to the
        driver, means the connection is gone (SQLAlchemy would invalidate it)."""
        return False

    # ----------------------------------------------------------- errors

    def translate(
        self, error: BaseException, entity: str | None, key: Any
    ) -> DataLayerError | None:
        """The typed error for an error of this backend's driver, if it is one."""
        return None
