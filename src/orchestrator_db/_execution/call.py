"""A call of one statement, on a pooled connection and nothing else.

A call on the ``Database`` whose plan is one statement (see
:mod:`orchestrator_db.calls`) needs no transaction, no session and no
``Connection``: :class:`CallExecutor` checks a connection out of the pool,
has the backend make it commit each statement on its own
(:meth:`Backend.start_call`), hands the statement, compiled once, straight to
the driver, builds the row's object detached, and gives the connection
back. That is what a unit of work costs beyond the statement itself, most
of a one-row call's time.

Whatever it cannot do that way, before anything is sent, it declines with
:class:`NeedsUnit`, and the call runs in a unit of work of the same kind
instead: a statement that must go through SQLAlchemy (echo, an engine
listener, a rewriting execution option), or anything but a statement
(the session, a flush). What it does is a unit's contract all the same:
errors are typed, the statement is timed for the slow-statement log, a
connection found dead is dropped.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, NoReturn, TypeVar

from sqlalchemy import Engine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql.expression import Executable

from orchestrator_db._execution import greenlets
from orchestrator_db._execution import rows as rows_module
from orchestrator_db._execution.backend import Backend, cause_of
from orchestrator_db._execution.compiled import compiled
from orchestrator_db._execution.direct import observed
from orchestrator_db._execution.errors import Boundary, translate
from orchestrator_db._execution.executor import UnitSyncSession
from orchestrator_db._execution.observe import Observer
from orchestrator_db._execution.transaction import NeedsTransaction, second_statement
from orchestrator_db.errors import DataLayerError, InternalError
from orchestrator_db.models.base import Base

ModelT = TypeVar("ModelT", bound=Base)
T = TypeVar("T")


class NeedsUnit(BaseException):
    """Raised by a :class:`CallExecutor` asked for what it does not do, with
    nothing sent: the call runs in a unit of work instead. Never leaves the
    package (not an ``Exception``: see :class:`NeedsTransaction`)."""


class CallExecutor:
    """The executor of a call of one statement (see the module): what a
    repository method asks of a unit's executor, for the one statement."""

    one_statement = True
    failure: DataLayerError | None = None

    def __init__(
        self, engine: Engine, backend: Backend, observer: Observer | None, *, read_only: bool
    ) -> None:
        """``engine``: whose pool the connection comes from; ``read_only``:
        a read's call (a read-only pool's connection, or SQLite's query_only),
        which may send more than one statement and asks for no transaction."""
        self.backend = backend
        self.dialect = engine.dialect
        self.observer = observer
        self._engine = engine
        self._read_only = read_only
        self._raw: PoolProxiedConnection | None = None
        self._undo = False
        self._sent = 0

    def __getattr__(self, name: str) -> NoReturn:
        # Anything else a unit's executor does (a flush, the ORM's get...).
        if name.startswith("__"):
            raise AttributeError(name)
        self._decline()

    @property
    def session(self) -> NoReturn:
        self._decline()

    def _decline(self) -> NoReturn:
        if self._sent and not self._read_only:
            raise InternalError(
                "an operation declared one statement used more than its statement "
                "(the session, say) after it; the statement took effect. Declare it a "
                "write, or make it use nothing else"
            )
        raise NeedsUnit  # a read sent nothing that matters: it runs again, in a unit

    def needs_transaction(self) -> None:
        if not self._read_only:
            raise NeedsTransaction

    def unflushed(self, *, auto: bool = False) -> bool:
        return False  # nothing is held, so nothing is pending

    def query_hooks(self) -> bool:
        # No session of its own: a hook can only be the class's (set on
        # Session, or on the session class of db.session_factory()), which a
        # new session shows.
        return bool(UnitSyncSession().dispatch.do_orm_execute)

    def holds(self, model: type[Base], key: Any) -> bool:
        return False

    def holds_key(self, model: type[Base], parts: Sequence[Any]) -> bool:
        return False

    def adopt(self, model: type[ModelT], row: Sequence[Any], *, refresh: bool) -> ModelT:
        return rows_module.detached(model, row)

    def loaded(self, model: type[ModelT], row: Sequence[Any], *, refresh: bool) -> ModelT | None:
        return None

    async def refresh_loaded(self, model: type[Base], keys: Iterable[Any]) -> None:
        return None  # nothing is loaded

    async def rows(
        self,
        statement: Executable,
        params: Mapping[str, Any] | None = None,
        *,
        entity: str | None = None,
        key: Any = None,
    ) -> list[Any]:
        if self._sent and not self._read_only:
            raise second_statement()
        prepared = compiled(statement, self.dialect)
        if prepared is None:
            self._decline()
        # Checked out at the first statement, once the method has checked
        # its arguments: a refused call neither waits for the pool nor needs it.
        raw = self._raw if self._raw is not None else await self._checkout()
        fetch = self.backend.fetcher(raw)
        if fetch is None:
            self._decline()
        self._sent += 1
        started = time.perf_counter()
        try:
            return await prepared.rows(fetch, params)
        except DataLayerError:
            raise
        except Exception as error:
            if self.backend.connection_lost(raw, error):
                raw.invalidate(error)
            translated = translate(error, self.backend, entity=entity, key=key)
            raise translated from cause_of(translated, error)
        except BaseException as error:
            # Cancelled mid-statement: the driver's state is unknown.
            raw.invalidate(error)
            raise
        finally:
            if self.observer is not None:
                self.observer.statement(statement, started)

    async def run(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, a repository method of this executor's, then the
        connection back to the pool; counted in the metrics as a unit of
        work. Declined (:class:`NeedsUnit`) before anything is done when the
        engine's statements must go through SQLAlchemy."""
        engine = self._engine
        if (
            observed(engine)
            or len(engine.dispatch.engine_connect) > self.backend.connect_listeners(engine)
            or "schema_translate_map" in engine.get_execution_options()
        ):
            raise NeedsUnit
        try:
            result = await call()
        except (NeedsUnit, NeedsTransaction):
            # Nothing was sent that matters: the call runs again, in a unit.
            with Boundary(self.backend):
                await self._close()
            raise
        except BaseException as error:
            self._ended(error)
            with contextlib.suppress(Exception):  # the call's own error first
                await self._close()
            raise
        self._ended(None)
        with Boundary(self.backend):
            await self._close()
        return result

    async def _checkout(self) -> PoolProxiedConnection:
        started = time.perf_counter()
        with Boundary(self.backend):
            raw = await greenlets.run(self._connect)
        if self.observer is not None:
            self.observer.pool_wait(started, self._engine.pool)
        return raw

    def _connect(self) -> PoolProxiedConnection:
        raw = self._engine.pool.connect()
        try:
            self._undo = self.backend.start_call(raw, read_only=self._read_only)
        except BaseException:
            raw.close()
            raise
        self._raw = raw
        return raw

    def _ended(self, error: BaseException | None) -> None:
        if self.observer is not None:
            self.observer.unit_opened()
            if error is not None:
                self.observer.unit_failed()

    async def _close(self) -> None:
        """Give the connection back (reset by the pool as any other)."""
        raw, self._raw = self._raw, None
        if raw is not None:
            await greenlets.run(self._give_back, raw)

    def _give_back(self, raw: PoolProxiedConnection) -> None:
        try:
            if self._undo and raw.is_valid:
                self.backend.end_call(raw)
        finally:
            raw.close()
