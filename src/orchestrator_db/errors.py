"""Typed errors raised by orchestrator_db.

Every error the package raises on purpose derives from :class:`DataLayerError`,
so callers can catch the whole family in one place. Driver errors never escape
a repository or a unit of work untranslated: :mod:`orchestrator_db.translate`
maps them, per dialect, onto the classes below.
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
    """The database cannot be reached, or no connection became free in time."""


class ReadOnlyError(DataLayerError):
    """A write was attempted in a read-only unit of work."""


class SchemaNotReadyError(DataLayerError):
    """A table is missing: the database has not been migrated to this version."""

    def __init__(self, table: str) -> None:
        super().__init__(
            f"table {table} does not exist: migrate the database first "
            "(`await db.migrate()` or `alembic upgrade head`)"
        )
        self.table = table


__all__ = [
    "CheckViolationError",
    "ConstraintViolationError",
    "DataLayerError",
    "DatabaseUnavailableError",
    "DependencyCycleError",
    "DuplicateKeyError",
    "ForeignKeyViolationError",
    "InvalidTransitionError",
    "LeaseLostError",
    "NotFoundError",
    "NotNullViolationError",
    "ReadOnlyError",
    "SchemaNotReadyError",
    "StatementTimeoutError",
    "TransactionConflictError",
    "ValidationError",
]
