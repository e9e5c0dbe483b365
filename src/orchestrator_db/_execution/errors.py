"""The error boundary: whatever fails, a typed error from :mod:`orchestrator_db.errors` leaves.

:func:`translate` turns any exception raised while talking to a database
into the matching typed error: first what SQLAlchemy knows (a pool timeout,
a connection it invalidated, a value its bind processors refused), then the
backend's reading of its driver's error (SQLSTATE codes on PostgreSQL,
extended result codes on SQLite), then what the exception's kind says (an
unreachable host, a value the driver refused). :class:`Boundary` applies it
around a block; the unit of work's boundary (in :mod:`.executor`) also fails
the unit closed.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from sqlalchemy import exc as sa_exc

from orchestrator_db._execution.backend import Backend, cause_of
from orchestrator_db.errors import (
    DatabaseError,
    DatabaseUnavailableError,
    DataLayerError,
    InternalError,
    NotFoundError,
    PoolTimeoutError,
    TransactionAbortedError,
    ValidationError,
)

#: Exceptions a driver or a type raises for a value it cannot take.
VALUE_ERRORS = (
    LookupError,
    TypeError,
    ValueError,
    OverflowError,
    UnicodeError,
    RecursionError,
)


def translate(
    error: BaseException, backend: Backend, *, entity: str | None = None, key: Any = None
) -> DataLayerError:
    """The typed error for ``error``, raised while ``backend``'s database was
    used. ``entity`` and ``key`` name what was being written, when known."""
    if isinstance(error, DataLayerError):
        return error
    if isinstance(error, sa_exc.TimeoutError):
        return PoolTimeoutError(
            f"no database connection became free in time ({error}); raise pool_size, "
            "max_overflow or pool_timeout, or keep units of work shorter"
        )
    orig: BaseException = error
    if isinstance(error, sa_exc.StatementError) and error.orig is not None:
        orig = error.orig
        if isinstance(orig, DataLayerError):
            return orig  # raised by a column type's bind processor
        if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
            return DatabaseUnavailableError(f"lost the database connection: {orig}")
    translated = backend.translate(orig, entity, key)
    if translated is not None:
        return translated
    if isinstance(orig, OSError | ConnectionError | TimeoutError):
        return DatabaseUnavailableError(f"cannot reach the database: {orig}")
    if isinstance(orig, VALUE_ERRORS):
        return ValidationError(f"{entity or 'value'} rejected: {type(orig).__name__}: {orig}")
    if isinstance(error, sa_exc.DBAPIError):
        return DatabaseError(f"the database refused the statement: {orig}")
    if isinstance(error, sa_exc.PendingRollbackError):
        return TransactionAbortedError(None)
    if isinstance(error, sa_exc.NoResultFound):
        return NotFoundError(entity or "row", key)
    if isinstance(orig, USAGE_ERRORS) or isinstance(error, USAGE_ERRORS):
        # A statement or a session used in a way SQLAlchemy refuses (a bind
        # parameter without a value, an object that is not mapped...).
        return ValidationError(f"rejected by SQLAlchemy: {orig}")
    return InternalError(f"unexpected {type(error).__name__}: {error}")


#: SQLAlchemy's errors for a call it refuses before sending anything.
USAGE_ERRORS = (sa_exc.ArgumentError, sa_exc.CompileError, sa_exc.InvalidRequestError)


class Boundary:
    """``with`` or ``async with Boundary(backend):`` raises whatever escapes
    the block as its typed error (the original chained as ``__cause__``).
    Errors that are not ``Exception`` (cancellation, interrupts) pass
    unchanged."""

    __slots__ = ("backend", "entity")

    def __init__(self, backend: Backend, entity: str | None = None) -> None:
        self.backend = backend
        self.entity = entity

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if error is None or isinstance(error, DataLayerError) or not isinstance(error, Exception):
            return
        translated = translate(error, self.backend, entity=self.entity)
        raise translated from cause_of(translated, error)

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(kind, error, traceback)
