"""What differs between the database engines: one :class:`Backend` per engine.

A backend knows how to build its engines, how to send a compiled statement
straight to its driver, how to insert a large batch, whether a connection
died, and how its driver reports errors. Everything above the execution
layer asks its backend instead of comparing dialect names.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, ClassVar, TypeVar

from sqlalchemy import Connection, Engine, Executable, Table
from sqlalchemy.engine import URL
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection

from orchestrator_db._execution.signals import Listener
from orchestrator_db.errors import DataLayerError
from orchestrator_db.settings import DatabaseSettings

#: Runs compiled SQL with positional arguments; returns the rows.
Fetch = Callable[[str, Sequence[Any]], Awaitable[Sequence[Sequence[Any]]]]

E = TypeVar("E", bound=DataLayerError)


def concealing(error: E) -> E:
    """Mark ``error`` as one whose cause must not be chained to it: the
    driver's error quotes values (a row, a parameter) that may be secret."""
    error.conceals_cause = True  # type: ignore[attr-defined]
    return error


def cause_of(translated: DataLayerError, error: BaseException) -> BaseException | None:
    """What to chain to ``translated`` as its cause: nothing for an error
    that quotes values (see :func:`concealing`); else the error, its SQL kept
    and its parameters (data, maybe secret) hidden."""
    if getattr(translated, "conceals_cause", False):
        return None
    if isinstance(error, StatementError):
        error.hide_parameters = True
    return error


class Backend:
    """The engine-specific half of the execution layer (see the module)."""

    #: The SQLAlchemy dialect name (``"sqlite"``, ``"postgresql"``).
    name: ClassVar[str]
    #: Whether a constraint violation names the foreign key that failed
    #: (SQLite only says "FOREIGN KEY constraint failed").
    names_foreign_keys: ClassVar[bool]
    #: Whether a statement in flight stops when its coroutine is cancelled
    #: (not SQLite's, which runs on in its thread and holds its connection).
    interruptible: ClassVar[bool] = True

    # ----------------------------------------------------------- engines

    def engine_options(
        self, url: URL, settings: DatabaseSettings, *, read_only: bool
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """``create_async_engine`` options: the defaults, which the user's
        ``extra_engine_options`` may change, and the options that enforce the
        package's guarantees (read-only units, timeouts), which they may not."""
        raise NotImplementedError

    def configure(self, engine: AsyncEngine, settings: DatabaseSettings) -> None:
        """Install what the engine needs on every connection (event listeners)."""

    def autocommit_reads(self, settings: DatabaseSettings) -> bool:
        """Whether each statement of a read-only unit stands alone (its own
        transaction, or none), so that the unit checks its connection out
        itself (see :class:`~orchestrator_db._execution.transaction.OwnConnection`),
        rather than through a read-only transaction of its session's."""
        return False

    #: Whether read-only units share the write engine's pool (with
    #: :meth:`read_only_options`) even when :meth:`autocommit_reads`, rather
    #: than use an engine of their own.
    reads_share_the_pool = False

    def autocommit_writes(self, settings: DatabaseSettings) -> bool:
        """Whether a write of one statement may run in autocommit
        (:meth:`autocommit_options`), rather than in a write unit."""
        return True

    def autocommit_options(self) -> dict[str, Any]:
        """Execution options under which each statement of the write
        engine commits on its own (a one-statement unit's: see
        :class:`~orchestrator_db.repositories.base.Plan`)."""
        raise NotImplementedError

    def read_only_options(self) -> dict[str, Any]:
        """Execution options that make the write engine's transactions read-only."""
        return {}

    async def before_stream(self, connection: AsyncConnection) -> None:
        """Run before a statement of the caller's is streamed (a server-side
        cursor) on ``connection``, a read-only unit's in autocommit."""

    #: Whether :meth:`keep_read_only` has anything to do (SQLite refuses
    #: such statements as it prepares them: see ``sqlite._Guard``).
    keeps_read_only = False

    async def keep_read_only(self, connection: AsyncConnection, *, text: bool) -> None:
        """Run after each statement a read-only unit's caller sends through
        its session or connection (``text``: written as SQL): refuse, or undo,
        what the statement did to make the unit or its connection writable."""

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

    def notify_statement(self) -> Executable | None:
        """The statement that announces work on ``:channel`` to other
        processes at commit (see :mod:`~orchestrator_db._execution.signals`),
        or ``None`` where there is none."""
        return None

    def cannot_listen(self, settings: DatabaseSettings) -> str | None:
        """Why waiters cannot listen for other processes' announcements
        (then they poll), or ``None`` when :meth:`listen` works."""
        return "SQLite has nothing to listen to; other processes' work is polled for"

    async def listen(self, engine: AsyncEngine, wake: Callable[[str], None]) -> Listener:
        """A connection of ``engine``'s (its own, held) that calls ``wake``
        with each channel of :data:`~orchestrator_db._execution.signals.CHANNELS`
        announced by any process."""
        raise NotImplementedError

    def connection_lost(self, raw: PoolProxiedConnection | None, error: BaseException) -> bool:
        """Whether ``error``, raised by a statement sent straight to the
        driver of the pooled connection ``raw`` (``None``: one closed
        already), means the connection is gone (SQLAlchemy would invalidate it)."""
        return False

    def start_call(self, raw: PoolProxiedConnection, *, read_only: bool) -> bool:
        """Make ``raw``, checked out of the pool without a ``Connection``
        (a call's: see :mod:`.call`), run each statement on its own, as the
        engines of :meth:`autocommit_options` and read-only units do;
        whether :meth:`end_call` has anything to undo."""
        return False

    def end_call(self, raw: PoolProxiedConnection) -> None:
        """Undo what :meth:`start_call` did, before ``raw`` goes back to the pool."""

    def connect_listeners(self, engine: Engine) -> int:
        """How many of ``engine``'s ``engine_connect`` listeners are the
        package's own (a call, which makes no ``Connection``, does their work
        in :meth:`start_call`; one of a user's makes calls run in units)."""
        return 0

    # ------------------------------------------------------- migrations

    @contextlib.contextmanager
    def migrating(self, connection: Connection) -> Iterator[None]:
        """Around a migration run, outside its transaction."""
        yield

    def lock_migrations(self, connection: Connection) -> None:
        """Inside the migration's transaction, before any revision: keep
        processes that start at once from applying a revision twice."""

    def check_migrations(self, connection: Connection) -> None:
        """Inside the migration's transaction, after the revisions: refuse
        (and so roll back) a migration that left the data inconsistent."""

    # ----------------------------------------------------------- errors

    def translate(
        self, error: BaseException, entity: str | None, key: Any
    ) -> DataLayerError | None:
        """The typed error for an error of this backend's driver, if it is one."""
        return None
