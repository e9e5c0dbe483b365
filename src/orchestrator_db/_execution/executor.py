"""Executors: where the statements of a unit of work, or of a queue worker, run.

An executor runs statements on one connection and turns their rows into
objects. It is the seam every statement of the package passes through:

* :meth:`Executor.rows` runs a Core statement. Where nothing would be lost by
  going around SQLAlchemy's execute path (see :func:`.direct.direct_fetch`), the SQL
  compiled once for the dialect (:mod:`.compiled`) goes straight to the
  driver, through the backend; otherwise SQLAlchemy runs it.
* :class:`UnitExecutor` serves a unit of work: ORM statements run through its
  session (a :class:`UnitSession`), rows become the session's objects, and
  every statement runs inside the unit's error boundary, which fails the unit
  closed: after a statement fails, the unit rolls back, and every later
  operation (and ``commit()``) raises
  :class:`~orchestrator_db.errors.TransactionAbortedError` until ``rollback()``.
* :class:`ConnectionExecutor` serves a queue worker: one connection, its
  transactions begun and ended by the worker, objects built detached.

A unit checks its connection out itself, and its session joins that
connection's transaction (:mod:`.transaction`); the statements that go
straight to the driver are chosen and run by :mod:`.direct`.
"""

from __future__ import annotations

import contextlib
import functools
import inspect as inspect_module
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol, TypeVar

from sqlalchemy import (
    ClauseElement,
    Connection,
    Table,
    TextClause,
    event,
    literal,
    select,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect, Result
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncMappingResult,
    AsyncResult,
    AsyncScalarResult,
    AsyncSession,
    AsyncSessionTransaction,
    AsyncTransaction,
    AsyncTupleResult,
)
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.orm.attributes import instance_state
from sqlalchemy.sql.ddl import ExecutableDDLElement
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.expression import Executable, TextualSelect

from orchestrator_db import values
from orchestrator_db._execution import bulk, greenlets, rows
from orchestrator_db._execution.backend import Backend, cause_of
from orchestrator_db._execution.direct import fetch_rows
from orchestrator_db._execution.engines import backend_for
from orchestrator_db._execution.errors import USAGE_ERRORS, VALUE_ERRORS, Boundary, translate
from orchestrator_db._execution.observe import Label, Observer
from orchestrator_db._execution.signals import Signals
from orchestrator_db._execution.transaction import (
    JOINED,
    Ending,
    NeedsTransaction,
    Notices,
    OwnConnection,
    Turn,
    second_statement,
)
from orchestrator_db.errors import (
    DatabaseError,
    DataLayerError,
    ForeignKeyViolationError,
    TransactionAbortedError,
)
from orchestrator_db.models.base import Base, check_bound_values, check_values

ModelT = TypeVar("ModelT", bound=Base)
T = TypeVar("T")


class Executor(Protocol):
    """What the queue's operations (and repositories) need of an executor."""

    backend: Backend
    #: The waiters of the executor's ``Database`` (``None`` outside one).
    signals: Signals | None
    #: Its counters and logs (``None`` outside one).
    observer: Observer | None
    #: What its transaction tells once it commits.
    notices: Notices

    async def announce(self, channel: str) -> None:
        """Say that work became ready on ``channel`` (see
        :mod:`~orchestrator_db._execution.signals`): to other processes at
        commit (PostgreSQL's NOTIFY), to this one's waiters once committed."""
        ...

    async def rows(
        self,
        statement: Executable,
        params: Mapping[str, Any] | None = None,
        *,
        entity: str | None = None,
        key: Any = None,
    ) -> list[Any]:
        """The rows of a Core statement."""
        ...

    async def run_many(
        self,
        statement: Executable,
        params: Sequence[Mapping[str, Any]],
        *,
        entity: str | None = None,
    ) -> None:
        """Run a Core statement once per parameter row (an executemany)."""
        ...

    def adopt(self, model: type[ModelT], row: Sequence[Any], *, refresh: bool) -> ModelT:
        """The object for ``row`` (``refresh``: the row was just changed)."""
        ...

    def loaded(self, model: type[ModelT], row: Sequence[Any], *, refresh: bool) -> ModelT | None:
        """The object already held for ``row``, if any, refreshed from it."""
        ...

    async def refresh_loaded(self, model: type[Base], keys: Iterable[Any]) -> None:
        """Re-read the objects held for ``keys`` (a statement changed them)."""
        ...


# --------------------------------------------------------- a unit of work


class UnitSyncSession(Session):
    """The synchronous session inside a :class:`UnitSession`: before a flush
    sends anything, it checks the values of the objects it will write (see
    :func:`~orchestrator_db.models.base.check_values`), so that a bad value
    set on an object directly is refused as it is by the repositories, with
    nothing sent and the unit still usable."""


@event.listens_for(UnitSyncSession, "after_commit")
def _committed(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a SAVEPOINT released: nothing is committed yet
    notices = session.info.get("notices")
    if notices is not None:
        notices.committed()


@event.listens_for(UnitSyncSession, "after_rollback")
def _rolled_back(session: Session) -> None:
    if session.in_nested_transaction():
        return  # back to a SAVEPOINT: the transaction goes on
    notices = session.info.get("notices")
    if notices is not None:
        notices.forget()


@event.listens_for(UnitSyncSession, "after_transaction_end")
def _ended(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(JOINED, None)


@event.listens_for(UnitSyncSession, "after_begin")
def _began(session: Session, transaction: Any, connection: Connection) -> None:
    # The session runs something on a connection: a unit's own connection
    # (OwnConnection) then has its transaction ended by the session.
    session.info[JOINED] = connection


@event.listens_for(UnitSyncSession, "before_flush")
def _check_before_flush(session: Session, context: Any, objects: Any) -> None:
    for obj in session.new:
        if isinstance(obj, Base):
            check_values(type(obj), instance_state(obj).dict)
    for obj in session.dirty:
        if isinstance(obj, Base):
            state = instance_state(obj)
            check_values(type(obj), state.dict, list(state.committed_state))


class UnitSession(AsyncSession):
    """The session of a unit of work (``uow.session``): every method that
    talks to the database runs inside the unit's error boundary, so it raises
    only :mod:`orchestrator_db.errors`, and refuses to run after a failed
    statement until ``rollback()``."""

    sync_session_class = UnitSyncSession
    _executor: UnitExecutor | None = None

    @property
    def executor(self) -> UnitExecutor:
        """The unit's executor (made on first use for a session that was not
        made by a unit of work, such as one from ``Database.session_factory``)."""
        if self._executor is None:
            bind = self.sync_session.bind
            assert bind is not None, "the session is bound to a Database's engine"
            UnitExecutor(self, backend_for(bind.dialect.name), None)
            assert self._executor is not None
        return self._executor

    def in_transaction(self) -> bool:
        """Whether a transaction is going: the session's, or the one the
        unit began on the connection it checked out itself."""
        return super().in_transaction() or self.executor.owns_transaction()

    def begin(self) -> AsyncSessionTransaction:
        if self.executor.owns_transaction():
            # As SQLAlchemy refuses a second begin(): the unit's transaction
            # is going (statements sent straight to the driver began it).
            with Boundary(self.executor.backend):
                raise sa_exc.InvalidRequestError("A transaction is already begun on this Session.")
        return super().begin()

    def begin_nested(self) -> AsyncSessionTransaction:
        return _Savepoint(self, nested=True)


class _Savepoint(AsyncSessionTransaction):
    """``uow.session.begin_nested()``: the SAVEPOINT is sent as it begins,
    not when the session next runs something itself, so that statements
    sent straight to the driver meanwhile are inside it too."""

    async def start(self, is_ctxmanager: bool = False) -> AsyncSessionTransaction:
        started = await super().start(is_ctxmanager)
        await self.session.connection()
        return started


def _guarded(
    method: Callable[..., Awaitable[T]],
    *,
    statement: bool = False,
    wraps_result: bool = False,
    streams: bool = False,
) -> Callable[..., Awaitable[T]]:
    """``method`` of the session inside the unit's boundary. ``statement``: it
    takes a statement first, whose values are checked as the package's own
    are; ``wraps_result``: what it returns (a streamed result, a connection)
    keeps to the boundary too."""

    @functools.wraps(method)
    async def guarded(self: UnitSession, *args: Any, **kwargs: Any) -> T:
        executor = self.executor
        sql = _callers_sql(args, kwargs) if statement else None
        if sql is not None:
            params = args[1] if len(args) > 1 else kwargs.get("params")
            check_statement(sql, params, executor.dialect)
        name = sql if sql is not None else Label(f"session {method.__name__}")
        async with _Statement(executor, name=name, connects=sql is not None):
            if streams:
                await executor.before_stream(None)
            result = await method(self, *args, **kwargs)
            if sql is not None:
                await executor.keep_read_only(None, sql)
        return _Guarded.around(result, executor) if wraps_result else result

    return guarded


def _translating(method: Callable[..., T]) -> Callable[..., T]:
    """A synchronous method of the session (``add``...), its errors typed."""

    @functools.wraps(method)
    def translating(self: UnitSession, *args: Any, **kwargs: Any) -> T:
        with Boundary(self.executor.backend):
            return method(self, *args, **kwargs)

    return translating


def check_statement(statement: Any, params: Any, dialect: Dialect) -> None:
    """Check the values a statement of the caller's binds, as the package
    checks its own: those bound in it (an INSERT's or UPDATE's values too),
    by column or type, and the text in ``params``."""
    if isinstance(statement, UpdateBase):
        # DML keeps its values aside until compiled.
        compiled = statement.compile(dialect=dialect)
        for name, bind in compiled.binds.items():
            if bind.expanding:
                continue  # an IN list: checked item by item below
            check = values.for_type(bind.type, name)
            value = compiled.params.get(name)
            if check is not None and value is not None and not callable(value):
                check(value)
    if isinstance(statement, ClauseElement):
        check_bound_values(statement)
    for row in params if isinstance(params, list | tuple) else (params,):
        if isinstance(row, Mapping):
            for name, value in row.items():
                if isinstance(value, str):
                    values.text(value, str(name))


def _ending(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """For the methods that end the transaction and clear a failure."""

    @functools.wraps(method)
    async def ending(self: UnitSession, *args: Any, **kwargs: Any) -> T:
        executor = self.executor
        async with executor.turn:  # after a statement in flight
            try:
                await executor.end_own(_ENDINGS[method.__name__])
                result = await method(self, *args, **kwargs)
            except Exception as error:
                translated = translate(error, executor.backend)
                raise translated from cause_of(translated, error)
            executor.failure = None
            return result

    return ending


#: The methods of a connection that run SQL of the caller's (coroutines;
#: its streams are started by :class:`_Stream`).
_RUNS_SQL = frozenset({"execute", "exec_driver_sql", "scalar", "scalars"})
_STREAMS = frozenset({"stream", "stream_scalars"})


def _callers_sql(args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
    """The statement a session's or connection's method was called with."""
    return args[0] if args else kwargs.get("statement")


def _is_text(statement: Any) -> bool:
    """Whether ``statement`` is SQL written by hand (which may say anything)."""
    return isinstance(statement, str | TextClause | TextualSelect | ExecutableDDLElement)


class _Guarded:
    """What the unit's session hands out (a streamed result, its connection,
    a transaction of that connection), kept to the unit's boundary: every
    call, iteration and ``async with`` of it runs inside it, and so does what
    those return."""

    __slots__ = ("_executor", "_target")

    #: The objects that are handed out guarded.
    KINDS: tuple[type, ...] = (
        AsyncResult,
        AsyncScalarResult,
        AsyncMappingResult,
        AsyncTupleResult,
        AsyncConnection,
        AsyncTransaction,
    )

    def __init__(self, target: Any, executor: UnitExecutor) -> None:
        self._target = target
        self._executor = executor

    @classmethod
    def around(cls, value: Any, executor: UnitExecutor) -> Any:
        return cls(value, executor) if isinstance(value, cls.KINDS) else value

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)
        if not callable(attribute):
            return attribute
        executor = self._executor
        target = self._target
        runs_sql = isinstance(target, AsyncConnection) and name in _RUNS_SQL
        if inspect_module.iscoroutinefunction(attribute):

            async def call(*args: Any, **kwargs: Any) -> Any:
                async with _Statement(executor):
                    result = await attribute(*args, **kwargs)
                    if runs_sql:
                        await executor.keep_read_only(target, _callers_sql(args, kwargs))
                    return _Guarded.around(result, executor)

            return call

        if isinstance(target, AsyncConnection) and name in _STREAMS:

            def stream(*args: Any, **kwargs: Any) -> _Stream:
                sql = _callers_sql(args, kwargs)
                return _Stream(attribute(*args, **kwargs), executor, target, sql)

            return stream

        def plain(*args: Any, **kwargs: Any) -> Any:
            with Boundary(executor.backend):
                return _Guarded.around(attribute(*args, **kwargs), executor)

        return plain

    def __aiter__(self) -> _Guarded:
        return self

    async def __anext__(self) -> Any:
        async with _Statement(self._executor):
            return await self._target.__anext__()

    async def __aenter__(self) -> Any:
        async with _Statement(self._executor):
            return _Guarded.around(await self._target.__aenter__(), self._executor)

    async def __aexit__(self, *exc_info: Any) -> Any:
        async with _Statement(self._executor):
            return await self._target.__aexit__(*exc_info)

    def __await__(self) -> Any:
        return self._awaited().__await__()

    async def _awaited(self) -> Any:
        async with _Statement(self._executor):
            return _Guarded.around(await self._target, self._executor)

    def __repr__(self) -> str:
        return f"<guarded {self._target!r}>"


class _Stream(_Guarded):
    """A connection's ``stream()`` (a server-side cursor), awaited or entered
    inside the unit's boundary; in a read-only unit in autocommit, inside the
    transaction a cursor needs (see :meth:`Backend.before_stream`)."""

    __slots__ = ("_connection", "_sql")

    def __init__(
        self, target: Any, executor: UnitExecutor, connection: AsyncConnection, sql: Any
    ) -> None:
        super().__init__(target, executor)
        self._connection = connection
        self._sql = sql

    async def _start(self, start: Callable[[], Awaitable[Any]]) -> Any:
        executor = self._executor
        async with _Statement(executor):
            await executor.before_stream(self._connection)
            result = await start()
            await executor.keep_read_only(self._connection, self._sql)
            return _Guarded.around(result, executor)

    async def _awaited(self) -> Any:
        return await self._start(lambda: self._target)

    async def __aenter__(self) -> Any:
        return await self._start(self._target.__aenter__)


for _name in (
    "delete",
    "delete_all",
    "flush",
    "get",
    "get_one",
    "merge",
    "merge_all",
    "refresh",
    "run_sync",
):
    setattr(UnitSession, _name, _guarded(getattr(AsyncSession, _name)))
for _name in ("execute", "scalar", "scalars"):
    setattr(UnitSession, _name, _guarded(getattr(AsyncSession, _name), statement=True))
for _name in ("stream", "stream_scalars"):
    _method = getattr(AsyncSession, _name)
    setattr(UnitSession, _name, _guarded(_method, statement=True, wraps_result=True, streams=True))


async def commit(self: UnitSession) -> None:
    """Commit the unit's transaction (its own connection's too)."""
    await self.executor.commit()


setattr(UnitSession, "commit", _guarded(commit))  # noqa: B010 - mypy: no method assignment
_connection = _guarded(AsyncSession.connection, wraps_result=True)
setattr(UnitSession, "connection", _connection)  # noqa: B010 - mypy: no method assignment
for _name in ("add", "add_all", "expunge", "expunge_all", "expire", "expire_all"):
    setattr(UnitSession, _name, _translating(getattr(AsyncSession, _name)))
_ENDINGS: dict[str, Ending] = {
    "rollback": "rollback",
    "close": "close",
    "reset": "close",
    "invalidate": "invalidate",
}
for _name in _ENDINGS:
    setattr(UnitSession, _name, _ending(getattr(AsyncSession, _name)))


class _Statement:
    """The unit's error boundary around statements (see :class:`UnitExecutor`)."""

    __slots__ = (
        "connects", "entity", "executor", "key", "model", "name", "row", "sends", "started"
    )  # fmt: skip

    def __init__(
        self,
        executor: UnitExecutor,
        entity: str | None = None,
        key: Any = None,
        model: type[Base] | None = None,
        row: Mapping[str, Any] | None = None,
        *,
        name: Any = None,
        connects: bool = False,
        sends: bool = True,
    ) -> None:
        self.executor = executor
        #: It may send a statement (a flush with nothing to write sends none).
        self.sends = sends
        #: It runs SQL: the unit's connection is taken first (a wait for
        #: the pool is then a wait, not a slow statement).
        self.connects = connects
        self.entity = entity
        self.key = key
        self.model = model
        self.row = row
        #: What a slow statement is called in the log: a statement, or text.
        self.name = name
        self.started = 0.0

    async def __aenter__(self) -> None:
        executor = self.executor
        await executor.turn.acquire()
        failure = executor.failure
        if failure is not None:
            executor.turn.release()
            raise TransactionAbortedError(failure)
        if self.sends and executor.one_statement:
            try:
                executor.sending()
            except BaseException:
                executor.turn.release()
                raise
        if self.connects and executor.observer is not None and executor.takes_connection():
            try:
                await executor.connection()
            except BaseException as error:
                try:
                    await executor.failed(error, self.entity, self.key)
                finally:
                    executor.turn.release()
                raise
        self.started = time.perf_counter()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        executor = self.executor
        try:
            if executor.observer is not None:
                what = self.name if self.name is not None else Label(f"{self.entity} statement")
                executor.observer.statement(what, self.started)
            if error is not None:
                await executor.failed(error, self.entity, self.key, self.model, self.row)
        finally:
            executor.turn.release()


def _fails_unit(error: Exception, session: AsyncSession) -> bool:
    """Whether ``error`` means the transaction failed. A call SQLAlchemy
    refused, or a value a column type refused while binding, sent nothing:
    the transaction fails only if SQLAlchemy ended it (a flush does)."""
    if isinstance(error, sa_exc.PendingRollbackError):
        return True
    refused_before_sending = isinstance(error, USAGE_ERRORS) or (
        type(error) is sa_exc.StatementError
        and isinstance(error.orig, (DataLayerError, *USAGE_ERRORS, *VALUE_ERRORS))
    )
    if refused_before_sending:
        transaction = session.sync_session.get_transaction()
        return transaction is not None and not transaction.is_active
    return True


class UnitExecutor:
    """A unit of work's executor: its session, its connection, its error
    boundary and whether a statement of it failed (see the module)."""

    def __init__(
        self,
        session: UnitSession,
        backend: Backend,
        autocommit_engine: AsyncEngine | None,
        signals: Signals | None = None,
        observer: Observer | None = None,
        *,
        checks_out: bool = False,
        read_only: bool = False,
        detaches: bool = False,
        one_statement: bool = False,
    ) -> None:
        """``autocommit_engine``: the engine, in autocommit, of a unit whose
        statements each commit on their own; ``checks_out``: a write unit,
        which checks its connection out from its session's engine and begins
        its transaction on it; either way the unit checks its connection out
        itself (see :class:`OwnConnection`). ``read_only``: a read-only unit,
        whose callers' statements the backend checks (see
        :meth:`Backend.keep_read_only`). ``detaches``: the unit's objects are
        built detached, without the session's bookkeeping (a unit that only
        returns them); ``one_statement``: the unit sends one statement, and
        refuses a second (see
        :class:`~orchestrator_db.repositories.base.Plan`)."""
        self.session = session
        self.backend = backend
        self.signals = signals
        self.observer = observer
        self.notices = Notices(self)
        # Told when the session's transaction commits or rolls back, however
        # it ends (uow.commit(), uow.session.commit(), rollback()).
        session.sync_session.info["notices"] = self.notices
        bind = session.sync_session.bind
        assert bind is not None, "a unit's session is bound to its engine"
        self.dialect: Dialect = bind.dialect
        #: The error that failed the unit; ``None`` while it is usable.
        self.failure: DataLayerError | None = None
        #: One statement at a time: coroutines sharing the unit take turns
        #: (one connection, one session; asyncpg refuses overlapping calls).
        self.turn = Turn()
        self._own: OwnConnection | None = None
        if autocommit_engine is not None:
            self._own = OwnConnection(autocommit_engine, session, begins=False)
        elif checks_out:
            assert isinstance(session.bind, AsyncEngine)
            self._own = OwnConnection(session.bind, session, begins=True)
        self._keeps_read_only = read_only and backend.keeps_read_only
        self._detaches = detaches
        self.one_statement = one_statement
        self._sent = 0
        self._given: tuple[Any, AsyncConnection] | None = None
        # The session's own methods, around the boundary its public ones add:
        # the executor's methods are that boundary, with more to say.
        self._session: AsyncSession = super(UnitSession, session)  # type: ignore[assignment]
        session._executor = self

    async def announce(self, channel: str) -> None:
        await self.notices.announce(channel)

    def sending(self) -> None:
        """Count a statement of a one-statement unit; refuse a second one."""
        self._sent += 1
        if self._sent > 1:
            raise second_statement()

    def needs_transaction(self) -> None:
        """Said by an operation of a one-statement unit that needs more than
        its statement, having written nothing: the call runs again in a write
        unit (see :class:`~orchestrator_db.repositories.base.Plan`). In any
        other unit, nothing."""
        if self.one_statement:
            raise NeedsTransaction

    def in_autocommit(self) -> bool:
        """Whether the unit's statements each commit on their own (a
        read-only unit on its own connection)."""
        return self._own is not None and not self._own.begins

    async def before_stream(self, connection: AsyncConnection | None) -> None:
        """Before a statement of the caller's is streamed on ``connection``
        (``None``: the unit's): see :meth:`Backend.before_stream`."""
        if self.in_autocommit():
            await self.backend.before_stream(connection or await self.connection())

    async def keep_read_only(self, connection: AsyncConnection | None, sql: Any) -> None:
        """After the caller's ``sql`` ran on ``connection`` (``None``: the
        unit's), in a read-only unit: see :meth:`Backend.keep_read_only`."""
        if self._keeps_read_only:
            await self.backend.keep_read_only(
                connection or await self.connection(), text=_is_text(sql)
            )

    def owns_transaction(self) -> bool:
        """Whether the unit's own connection has a transaction going."""
        own = self._own
        return own is not None and own.begins and own.connection is not None

    def takes_connection(self) -> bool:
        """Whether the session's statements run on :meth:`connection` (not
        on a unit in autocommit's, which they do not use)."""
        return self._own is None or self._own.begins

    def begun(self) -> bool:
        """Whether the unit has a transaction going or holds objects (which
        a rollback would expire or drop)."""
        return not self._holds_no_connection() or self.holds_objects()

    def holds_objects(self) -> bool:
        sync = self.session.sync_session
        return bool(sync.new or sync.dirty or sync.deleted) or len(sync.identity_map) > 0

    async def end_transaction(self) -> None:
        """Roll back the unit's transaction, which did nothing worth keeping
        (a claim that found nothing): locks are released while it waits."""
        async with self.turn:
            if await self.end_own("rollback"):
                return
            await greenlets.run(self.session.sync_session.rollback)
            self._given = None
            if self._own is not None:
                await self._own.release()

    async def commit(self) -> None:
        """Commit the unit's transaction (``uow.commit()``,
        ``uow.session.commit()``), inside the caller's boundary."""
        if not await self.end_own("commit"):
            await greenlets.run(self.session.sync_session.commit)

    async def end_own(self, how: Ending) -> bool:
        """End the transaction of the write unit's own connection and give
        it back (see :meth:`OwnConnection.end`); ``False`` if it has none."""
        own = self._own
        if own is None or not self.owns_transaction():
            return False
        self._given = None
        await greenlets.run(own.end, how, self.notices)
        return True

    # ------------------------------------------------------------ running

    async def connection(self) -> AsyncConnection:
        """The connection the unit runs its statements on.

        Asking the session costs a greenlet hop even when it holds one
        already, so the one it gave last is reused while the transaction it
        gave it for is still active. A unit in autocommit with no session
        transaction going uses its own connection. Otherwise (the unit
        committed, or failed and awaits a rollback) the session is asked, and
        says so.
        """
        session = self.session
        transaction = session.sync_session.get_transaction()
        own = self._own
        if own is not None:
            if transaction is None:
                started = time.perf_counter()
                connection = await own.checkout()
                if self.observer is not None:
                    self.observer.pool_wait(started, connection.sync_engine.pool)
                return connection
            # Once checked out it is the session's bind: the only connection
            # the session can hold. (A session transaction can exist without
            # any connection: adding an object to the session begins one.)
            if own.connection is not None and transaction.is_active:
                return own.connection
        given = self._given
        if given is not None and given[0] is transaction and transaction.is_active:
            return given[1]
        started = time.perf_counter()
        connection = await self._session.connection()
        if self.observer is not None:
            self.observer.pool_wait(started, connection.sync_engine.pool)
        self._given = (session.sync_session.get_transaction(), connection)
        return connection

    async def rows(
        self,
        statement: Executable,
        params: Mapping[str, Any] | None = None,
        *,
        entity: str | None = None,
        key: Any = None,
    ) -> list[Any]:
        # The boundary of _Statement, inline: this is the hot path.
        async with self.turn:
            if self.failure is not None:
                raise TransactionAbortedError(self.failure)
            if self.one_statement:
                self.sending()
            started: float | None = None
            try:
                connection = await self.connection()  # a wait for the pool is not the statement's
                started = time.perf_counter()
                return await fetch_rows(
                    connection,
                    self.backend,
                    statement,
                    params,
                    session_connection=self._session.connection,
                )
            except BaseException as error:
                await self.failed(error, entity, key)
                raise
            finally:
                if self.observer is not None and started is not None:
                    self.observer.statement(statement, started)

    async def execute(
        self,
        statement: Executable,
        params: Any = None,
        *,
        entity: str | None = None,
        key: Any = None,
        **options: Any,
    ) -> Result[Any]:
        """Run ``statement`` through the session (ORM statements, and Core
        statements whose result needs SQLAlchemy, such as a rowcount)."""
        async with _Statement(self, entity, key, name=statement, connects=True):
            return await self._session.execute(statement, params, **options)

    async def run_many(
        self,
        statement: Executable,
        params: Sequence[Mapping[str, Any]],
        *,
        entity: str | None = None,
    ) -> None:
        async with _Statement(self, entity, name=statement, connects=True):
            connection = await self._session.connection()
            await connection.execute(statement, list(params))

    async def scalars(
        self,
        statement: Executable,
        params: Mapping[str, Any] | None = None,
        *,
        entity: str | None = None,
    ) -> list[Any]:
        async with _Statement(self, entity, name=statement, connects=True):
            return list((await self._session.execute(statement, params)).scalars().all())

    async def flush(
        self,
        *,
        entity: str | None = None,
        key: Any = None,
        model: type[Base] | None = None,
        row: Mapping[str, Any] | None = None,
    ) -> None:
        sync = self.session.sync_session
        changes = bool(sync.new or sync.dirty or sync.deleted)
        async with _Statement(self, entity, key, model, row, connects=changes, sends=changes):
            await greenlets.run(sync.flush)

    async def get(self, model: type[ModelT], key: Any, *, for_update: bool) -> ModelT | None:
        """The ORM's own get: from the identity map, or (``for_update``) read
        and locked, overwriting what the session holds."""
        async with _Statement(self, model.__name__, key):
            return await greenlets.run(
                self.session.sync_session.get,
                model,
                key,
                with_for_update=for_update,
                populate_existing=for_update,
            )

    async def refresh(
        self, obj: Base, names: Sequence[str], *, entity: str | None = None, key: Any = None
    ) -> None:
        """Re-read the attributes ``names`` of ``obj``."""
        async with _Statement(self, entity, key):
            await greenlets.run(self.session.sync_session.refresh, obj, attribute_names=names)

    async def insert_many(self, model: type[Base], dicts: list[dict[str, Any]]) -> None:
        """Insert the rows of ``dicts`` (objects' instance dicts; defaults are
        written back into them) with one bulk statement."""
        plan = bulk.plan_for(model, self.dialect)
        batch = plan.rows(dicts)  # a bad value is refused here, before anything is sent
        async with _Statement(self, plan.entity):
            # Pending objects (parents added with add()) must exist first.
            await greenlets.run(self.session.sync_session.flush)
            connection = await self._session.connection()
            sql = plan.sql(batch.keys)
            await self.backend.insert_many(connection, plan.table, sql, batch.keys, batch.rows)

    # ------------------------------------------------------------ objects

    def adopt(self, model: type[ModelT], row: Sequence[Any], *, refresh: bool) -> ModelT:
        if self._detaches:
            return rows.detached(model, row)
        return rows.adopt(self.session.sync_session, model, row, refresh=refresh)

    def loaded(self, model: type[ModelT], row: Sequence[Any], *, refresh: bool) -> ModelT | None:
        return rows.loaded(self.session.sync_session, model, row, refresh=refresh)

    def unflushed(self, *, auto: bool = False) -> bool:
        """Whether the session holds changes to flush (with ``auto``: and
        flushes them itself before a query, autoflush being on)."""
        sync = self.session.sync_session
        if auto and not sync.autoflush:
            return False
        return bool(sync.new or sync.deleted or sync.dirty)

    def query_hooks(self) -> bool:
        """Whether a ``do_orm_execute`` hook (``with_loader_criteria``, say)
        must see this unit's queries: they then go through the session."""
        return bool(self.session.sync_session.dispatch.do_orm_execute)

    def holds_key(self, model: type[Base], parts: Sequence[Any]) -> bool:
        """Whether the session holds the stored object of key ``parts``."""
        mapper = rows.row_layout(model).mapper
        return mapper.identity_key_from_primary_key(tuple(parts)) in self.session.identity_map

    def holds(self, model: type[Base], key: Any) -> bool:
        """Whether the session holds an object for the row ``key`` of
        ``model``, stored or pending."""
        sync = self.session.sync_session
        mapper = rows.row_layout(model).mapper
        if mapper.identity_key_from_primary_key((key,)) in sync.identity_map:
            return True
        return any(
            isinstance(obj, model) and mapper.primary_key_from_instance(obj) == (key,)
            for obj in sync.new
        )

    async def refresh_loaded(self, model: type[Base], keys: Iterable[Any]) -> None:
        mapper = rows.row_layout(model).mapper
        identity_map = self.session.identity_map
        for key in keys:
            held = identity_map.get(mapper.identity_key_from_primary_key((key,)))
            if held is not None:
                async with _Statement(self):
                    await greenlets.run(self.session.sync_session.refresh, held)

    # ------------------------------------------------------------ failure

    async def failed(
        self,
        error: BaseException,
        entity: str | None = None,
        key: Any = None,
        model: type[Base] | None = None,
        row: Mapping[str, Any] | None = None,
    ) -> None:
        """The boundary's verdict on ``error``, raised by a statement: raise
        its typed error, failing the unit when the statement failed."""
        # A typed error was raised before anything was sent, or translated
        # already by an inner boundary; a streamed result's end is no error.
        if isinstance(error, DataLayerError | StopAsyncIteration | GeneratorExit):
            return
        if not isinstance(error, Exception):
            # Cancelled or interrupted in mid-statement: what the database
            # holds of this transaction is unknown.
            if self.failure is None:
                self.failure = DatabaseError(
                    f"a statement was interrupted ({type(error).__name__})"
                )
            return
        translated = translate(error, self.backend, entity=entity, key=key)
        if _fails_unit(error, self.session):
            translated = await self.fail(translated, model, row)
        raise translated from cause_of(translated, error)

    async def fail(
        self,
        error: DataLayerError,
        model: type[Base] | None = None,
        row: Mapping[str, Any] | None = None,
    ) -> DataLayerError:
        """Fail the unit with ``error``: roll its transaction back (releasing
        its locks at once) and refuse everything until ``rollback()``. Returns
        the error to raise, with the foreign key named when SQLite did not."""
        if (
            isinstance(error, ForeignKeyViolationError)
            and error.constraint is None
            and not self.backend.names_foreign_keys
            and model is not None
            and row is not None
        ):
            # SQLite's transaction survives a failed statement: the parents
            # the unit wrote itself are still visible, unless a failed flush
            # already rolled back, which the session must then finish.
            transaction = self.session.sync_session.get_transaction()
            if transaction is not None and not transaction.is_active:
                await self._rollback()
            constraint = await self._missing_parent(model, row)
            if constraint is not None:
                error = ForeignKeyViolationError(error.entity, error.key, constraint)
        self.failure = error
        await self._rollback()
        return error

    async def _rollback(self) -> None:
        self.notices.forget()
        # The connection may be gone: the caller's rollback() resets the session.
        with contextlib.suppress(Exception):
            await self.end_own("rollback")
        with contextlib.suppress(Exception):
            await greenlets.run(self.session.sync_session.rollback)

    async def _missing_parent(self, model: type[Base], row: Mapping[str, Any]) -> str | None:
        """The foreign key of ``row`` whose parent row is missing, when exactly
        one is (the name is never a guess)."""
        table = model.__table__
        assert isinstance(table, Table)
        missing = []
        for constraint in sorted(table.foreign_key_constraints, key=lambda c: str(c.name)):
            pairs = [
                (element.column, row.get(element.parent.key)) for element in constraint.elements
            ]
            if any(value is None for _, value in pairs):
                continue
            probe = select(literal(1)).where(*(column == value for column, value in pairs))
            try:
                found = (await self._session.execute(probe.limit(1))).first()
            except Exception:
                return None
            if found is None:
                missing.append(str(constraint.name))
        return missing[0] if len(missing) == 1 else None

    # ------------------------------------------------------------- ending

    async def close(self) -> None:
        """End the unit: roll back what was not committed and give the
        connection back. Objects stay readable (detached, not expired)."""
        async with self.turn:  # after a statement in flight
            await self._close()

    async def _close(self) -> None:
        session = self.session
        try:
            if await self.end_own("close"):
                session.sync_session.close()  # nothing left to roll back
            elif self._holds_no_connection():
                # Nothing to roll back or give back: detaching the objects
                # needs no I/O and no greenlet hop (and a session that holds
                # none, as a unit of one call's, needs nothing at all).
                sync = session.sync_session
                if sync.in_transaction() or self.holds_objects():
                    sync.close()
            else:
                await self._session.close()
        finally:
            self.failure = None
            self._given = None
            self.notices.forget()
            if self._own is not None:
                await self._own.release()

    def _holds_no_connection(self) -> bool:
        """True when the session has begun nothing, or only the transaction
        that adding an object begins, on no connection but the unit's own
        one, which it has not used."""
        session = self.session
        own = self._own
        if self.owns_transaction():
            return False  # a write unit's own connection begins its transaction
        if not session.in_transaction():
            return True
        return (
            own is not None and own.connection is not None and not own.connection.in_transaction()
        )


class ConnectionExecutor:
    """A queue worker's executor: one connection, whose transactions the
    worker begins and ends; objects come back detached."""

    def __init__(
        self,
        connection: AsyncConnection,
        backend: Backend,
        signals: Signals | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.connection = connection
        self.backend = backend
        self.signals = signals
        self.observer = observer
        self.notices = Notices(self)

    async def announce(self, channel: str) -> None:
        await self.notices.announce(channel)

    async def rows(
        self,
        statement: Executable,
        params: Mapping[str, Any] | None = None,
        *,
        entity: str | None = None,
        key: Any = None,
    ) -> list[Any]:
        with self._timed(statement):
            return await fetch_rows(self.connection, self.backend, statement, params)

    async def run_many(
        self,
        statement: Executable,
        params: Sequence[Mapping[str, Any]],
        *,
        entity: str | None = None,
    ) -> None:
        with self._timed(statement):
            await self.connection.execute(statement, list(params))

    @contextlib.contextmanager
    def _timed(self, statement: Executable) -> Iterator[None]:
        """A slow statement is logged and counted (see ``observe``)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            if self.observer is not None:
                self.observer.statement(statement, started)

    def adopt(self, model: type[ModelT], row: Sequence[Any], *, refresh: bool) -> ModelT:
        return rows.detached(model, row)

    def loaded(self, model: type[ModelT], row: Sequence[Any], *, refresh: bool) -> ModelT | None:
        return None

    async def refresh_loaded(self, model: type[Base], keys: Iterable[Any]) -> None:
        return None
