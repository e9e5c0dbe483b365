"""Typed errors raised by orchestrator_db.

Every error the package raises on purpose derives from :class:`DataLayerError`,
so callers can catch the whole family in one place. Nothing else leaves a
``Database``, a unit of work (its session included), a repository, a queue
worker or the command line: the execution layer's error boundary
(:mod:`orchestrator_db._execution.errors`) maps driver and SQLAlchemy errors,
per database engine, onto the classes below.
"""

from __future__ import annotations

from typing import Any


class DataLayerError(Exception):
    """Base class of every error raised by orchestrator_db."""


class ValidationError(DataLayerError, ValueError):
    """A value was rejected before it reached the database.

    ``field`` names the offending attribute or argument when there is one.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NotFoundError(DataLayerError, LookupError):
    """The row addressed by ``entity`` and ``key`` does not exist."""

    def __init__(self, entity: str, key: Any) -> None:
        super().__init__(f"{entity} {key!r} does not exist")
        self.entity = entity
        self.key = key


class ConstraintViolationError(DataLayerError):
    """The database refused a write because it breaks a constraint.

    ``entity`` is the model being written, ``key`` its primary key (when known)
    and ``constraint`` the name of the violated constraint (when the database
    reports it, or when it could be worked out).
    """

    kind = "constraint"

    def __init__(
        self,
        entity: str | None,
        key: Any = None,
        constraint: str | None = None,
        *,
        detail: str | None = None,
    ) -> None:
        self.entity = entity
        self.key = key
        self.constraint = constraint
        self.detail = detail
        super().__init__(self._message())

    def _message(self) -> str:
        what = self.entity or "row"
        if self.key is not None:
            what = f"{what} {self.key!r}"
        message = f"{what} violates {self.kind}"
        if self.constraint:
            message += f" {self.constraint!r}"
        if self.detail:
            message += f": {self.detail}"
        return message


class DuplicateKeyError(ConstraintViolationError):
    """A primary key or unique constraint already holds this value."""

    kind = "unique constraint"


class ForeignKeyViolationError(ConstraintViolationError):
    """A referenced row does not exist."""

    kind = "foreign key"


class CheckViolationError(ConstraintViolationError):
    """A CHECK constraint rejected the row."""

    kind = "check constraint"


class NotNullViolationError(ConstraintViolationError):
    """A NOT NULL column was given no value."""

    kind = "not-null constraint"


class InvalidTransitionError(DataLayerError):
    """A state change that the entity's lifecycle does not allow."""

    def __init__(self, entity: str, key: Any, current: str, target: str) -> None:
        super().__init__(f"{entity} {key!r} cannot move from {current!r} to {target!r}")
        self.entity = entity
        self.key = key
        self.current = current
        self.target = target


class DependencyCycleError(ValidationError):
    """A task dependency that would make the dependency graph cyclic."""

    def __init__(self, task_id: str, depends_on_id: str) -> None:
        super().__init__(
            f"task {task_id!r} cannot depend on {depends_on_id!r}: "
            f"{depends_on_id!r} already depends on {task_id!r}, directly or through others",
            field="depends_on",
        )
        self.task_id = task_id
        self.depends_on_id = depends_on_id


class LeaseLostError(DataLayerError):
    """A worker acted on a task it no longer holds: its lease expired, the
    task was requeued or handed to another worker, or it was cancelled."""

    def __init__(self, task_id: str, worker_id: str, reason: str) -> None:
        super().__init__(f"worker {worker_id!r} does not hold task {task_id!r}: {reason}")
        self.task_id = task_id
        self.worker_id = worker_id
        self.reason = reason


class TransactionConflictError(DataLayerError):
    """The transaction lost a race with another one and was rolled back.

    Raised for PostgreSQL serialization failures and deadlocks and for SQLite's
    "database is locked" after ``busy_timeout``. Retrying the whole unit of work
    is safe.
    """


class StatementTimeoutError(DataLayerError):
    """A statement ran past the server's ``statement_timeout`` and was cancelled."""


class DatabaseUnavailableError(DataLayerError):
    """The database cannot be reached, or the connection was lost. Retrying
    later may succeed."""


class PoolTimeoutError(DataLayerError):
    """No pooled connection became free within ``pool_timeout``: the process
    holds every connection of its pool (units of work kept open too long, or
    too many at once). The database itself may be fine."""


class DatabaseConfigurationError(DataLayerError):
    """The database refused the connection as configured: the database or
    role does not exist, the password is wrong, or the SQLite file cannot be
    opened (a missing directory, no permission, not a database). Retrying
    does not help; the URL or the server needs fixing."""


class DatabaseError(DataLayerError):
    """The database refused a statement for a reason no other error here
    describes. ``code`` is the driver's code for it when there is one (the
    SQLSTATE on PostgreSQL, the extended result code name on SQLite)."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class TransactionAbortedError(DataLayerError):
    """A statement of this unit of work failed earlier (or was interrupted):
    every later operation and ``commit()`` raise this error until
    ``rollback()`` (or the end of the ``async with`` block), so a unit is
    never committed with only part of its work. ``cause`` is the earlier
    error."""

    def __init__(self, cause: DataLayerError | None) -> None:
        what = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
        super().__init__(
            f"an earlier statement of this unit of work failed{what}; nothing of the unit "
            "will be committed: call rollback() or start a new unit"
        )
        self.cause = cause


class InternalError(DataLayerError):
    """orchestrator_db failed in a way it does not expect: a bug. The
    original exception is chained as ``__cause__``."""


class ReadOnlyError(DataLayerError):
    """A write was attempted in a read-only unit of work."""


class SchemaNotReadyError(DataLayerError):
    """The database's schema is not one this package can use: a table is
    missing (the database has not been migrated), or see the subclasses."""

    def __init__(self, table: str | None = None, *, message: str | None = None) -> None:
        super().__init__(
            message
            or f"table {table} does not exist: migrate the database first "
            "(`await db.migrate()` or `alembic upgrade head`)"
        )
        self.table = table


class UnknownRevisionError(SchemaNotReadyError):
    """The database is at a schema revision this version of the package does
    not know: a newer version of it (or another tool) migrated the database.
    Neither ``migrate()`` nor ``downgrade()`` can move it, and no unit of work
    runs on it."""

    def __init__(self, revision: str, head: str | None) -> None:
        super().__init__(
            message=f"the database is at schema revision {revision!r}, which this version "
            f"of orchestrator_db does not know (its newest is {head!r}): it was migrated by "
            "a newer version; upgrade orchestrator_db, or downgrade the database with the "
            "version that migrated it"
        )
        self.revision = revision
        self.head = head


__all__ = [
    "CheckViolationError",
    "ConstraintViolationError",
    "DataLayerError",
    "DatabaseConfigurationError",
    "DatabaseError",
    "DatabaseUnavailableError",
    "DependencyCycleError",
    "DuplicateKeyError",
    "ForeignKeyViolationError",
    "InternalError",
    "InvalidTransitionError",
    "LeaseLostError",
    "NotFoundError",
    "NotNullViolationError",
    "PoolTimeoutError",
    "ReadOnlyError",
    "SchemaNotReadyError",
    "StatementTimeoutError",
    "TransactionAbortedError",
    "TransactionConflictError",
    "UnknownRevisionError",
    "ValidationError",
]
