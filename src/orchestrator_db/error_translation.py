"""The one place where driver and SQLAlchemy errors become typed errors.

:func:`translate` looks at an exception raised while talking to the database
and returns the matching :mod:`orchestrator_db.errors` instance, per dialect:
SQLite reports through ``sqlite3`` extended result codes and messages,
PostgreSQL through SQLSTATE codes and the structured fields asyncpg exposes.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

from sqlalchemy import exc as sa_exc

from orchestrator_db.errors import (
    CheckViolationError,
    ConstraintViolationError,
    DatabaseUnavailableError,
    DataLayerError,
    DuplicateKeyError,
    ForeignKeyViolationError,
    NotNullViolationError,
    ReadOnlyError,
    SchemaNotReadyError,
    StatementTimeoutError,
    TransactionConflictError,
    ValidationError,
)

_SQLITE_COLUMNS = re.compile(r"constraint failed: (.+)$")
_SQLITE_NO_TABLE = re.compile(r"no such table: (\S+)")

_SQLITE_CONSTRAINTS: dict[str, type[ConstraintViolationError]] = {
    "SQLITE_CONSTRAINT_PRIMARYKEY": DuplicateKeyError,
    "SQLITE_CONSTRAINT_UNIQUE": DuplicateKeyError,
    "SQLITE_CONSTRAINT_FOREIGNKEY": ForeignKeyViolationError,
    "SQLITE_CONSTRAINT_CHECK": CheckViolationError,
    "SQLITE_CONSTRAINT_NOTNULL": NotNullViolationError,
}
_SQLITE_UNAVAILABLE = ("SQLITE_CANTOPEN", "SQLITE_IOERR", "SQLITE_NOTADB", "SQLITE_CORRUPT")
_SQLITE_CONFLICT = ("SQLITE_BUSY", "SQLITE_LOCKED")

_PG_CONSTRAINTS: dict[str, type[ConstraintViolationError]] = {
    "23505": DuplicateKeyError,
    "23503": ForeignKeyViolationError,
    "23514": CheckViolationError,
    "23502": NotNullViolationError,
}
# 40001 serialization_failure, 40P01 deadlock_detected, 55P03 lock_not_available
_PG_CONFLICT = ("40001", "40P01", "55P03")
_PG_UNDEFINED_TABLE = "42P01"


def translate(
    error: BaseException, *, entity: str | None = None, key: Any = None
) -> DataLayerError | None:
    """The typed error for ``error``, or ``None`` if it is not a database error.

    ``entity`` and ``key`` name what was being written when the caller knows.
    """
    if isinstance(error, DataLayerError):
        return error
    if isinstance(error, sa_exc.TimeoutError):
        return DatabaseUnavailableError(
            f"no database connection became free in time ({error}); raise pool_size, "
            "max_overflow or pool_timeout, or keep units of work shorter"
        )
    if isinstance(error, sa_exc.DBAPIError):
        if error.connection_invalidated:
            return DatabaseUnavailableError(f"lost the database connection: {error.orig}")
        orig: BaseException | None = error.orig
        if isinstance(orig, sqlite3.Error):
            return _translate_sqlite(orig, entity, key)
        sqlstate = getattr(orig, "sqlstate", None)
        if sqlstate is not None and orig is not None:
            return _translate_postgresql(orig, str(sqlstate), entity, key)
        if _is_connection_failure(orig):
            return DatabaseUnavailableError(f"cannot reach the database: {orig}")
        if isinstance(orig, LookupError | TypeError | ValueError):
            # The driver refused a value before sending it (asyncpg's DataError).
            return ValidationError(f"{entity or 'value'} rejected: {orig}")
        return None
    # Raised by asyncpg itself, outside SQLAlchemy (the COPY bulk path).
    sqlstate = getattr(error, "sqlstate", None)
    if isinstance(sqlstate, str):
        return _translate_postgresql(error, sqlstate, entity, key)
    if isinstance(error, sa_exc.StatementError):
        orig = error.orig
        if isinstance(orig, DataLayerError):
            return orig
        if isinstance(orig, LookupError | TypeError | ValueError):
            # Raised while binding parameters: a bad enum string, a value that
            # is not JSON-serialisable, a malformed number.
            return ValidationError(f"{entity or 'value'} rejected: {orig}")
        return None
    if _is_connection_failure(error):
        return DatabaseUnavailableError(f"cannot reach the database: {error}")
    return None


def is_database_error(error: BaseException) -> bool:
    """Whether the database (not the caller) rejected a statement, whether
    SQLAlchemy wrapped the driver's error or asyncpg raised it (COPY)."""
    return isinstance(error, sa_exc.DBAPIError) or isinstance(getattr(error, "sqlstate", None), str)


def _is_connection_failure(error: BaseException | None) -> bool:
    if isinstance(error, OSError | ConnectionError):
        return True
    name = type(error).__name__
    # asyncpg's connection errors, without importing asyncpg (an optional extra).
    return name in {"ConnectionDoesNotExistError", "CannotConnectNowError", "InterfaceError"} or (
        str(getattr(error, "sqlstate", "")).startswith("08")
    )


def _translate_sqlite(error: sqlite3.Error, entity: str | None, key: Any) -> DataLayerError | None:
    code = getattr(error, "sqlite_errorname", "") or ""
    message = str(error)
    kind = _SQLITE_CONSTRAINTS.get(code)
    if kind is not None:
        detail = _SQLITE_COLUMNS.search(message)
        target = detail.group(1) if detail else None
        if kind is CheckViolationError:
            # "CHECK constraint failed: ck_tasks_status" names the constraint.
            return CheckViolationError(entity, key, target)
        if kind is DuplicateKeyError and target:
            return DuplicateKeyError(entity, key, _unique_constraint_for(target), detail=target)
        if kind is NotNullViolationError:
            return NotNullViolationError(entity, key, None, detail=f"{target} is required")
        # SQLite does not say which foreign key failed; the repository works
        # it out (see Repository._name_foreign_key) when it can.
        return kind(entity, key, None)
    if code.startswith("SQLITE_READONLY"):
        return ReadOnlyError(f"{message}: this unit of work is read-only")
    if code.startswith(_SQLITE_CONFLICT):
        return TransactionConflictError(
            f"{message}: another connection held the write lock for longer than "
            "busy_timeout; retry the unit of work or raise busy_timeout"
        )
    if code.startswith(_SQLITE_UNAVAILABLE):
        return DatabaseUnavailableError(f"cannot use the SQLite database: {message}")
    missing = _SQLITE_NO_TABLE.search(message)
    if missing:
        return SchemaNotReadyError(missing.group(1))
    return None


def _unique_constraint_for(columns_text: str) -> str | None:
    """Map SQLite's "tasks.id, tasks.x" onto the named constraint it came from."""
    from orchestrator_db.models import Base

    pairs = [part.strip().split(".", 1) for part in columns_text.split(",")]
    if not pairs or any(len(pair) != 2 for pair in pairs):
        return None
    table = Base.metadata.tables.get(pairs[0][0])
    if table is None:
        return None
    columns = {pair[1] for pair in pairs}
    if {c.name for c in table.primary_key.columns} == columns:
        return str(table.primary_key.name)
    for constraint in table.constraints:
        names = {c.name for c in getattr(constraint, "columns", ())}
        if names == columns and constraint.name and constraint is not table.primary_key:
            return str(constraint.name)
    for index in table.indexes:
        if index.unique and {c.name for c in index.columns} == columns:
            return str(index.name)
    return None


def _translate_postgresql(
    error: BaseException, sqlstate: str, entity: str | None, key: Any
) -> DataLayerError | None:
    driver_error = error.__cause__ or error
    kind = _PG_CONSTRAINTS.get(sqlstate)
    if kind is not None:
        constraint = getattr(driver_error, "constraint_name", None)
        detail = getattr(driver_error, "detail", None) or getattr(error, "detail", None)
        if kind is NotNullViolationError:
            column = getattr(driver_error, "column_name", None)
            table = getattr(driver_error, "table_name", None)
            detail = f"{table}.{column} is required" if column else detail
        return kind(entity, key, constraint, detail=detail)
    if sqlstate == "57014":
        return StatementTimeoutError(
            f"{driver_error}: raise statement_timeout or make the statement cheaper"
        )
    if sqlstate == "25006":
        return ReadOnlyError(f"{driver_error}: this unit of work is read-only")
    if sqlstate in _PG_CONFLICT:
        return TransactionConflictError(
            f"{driver_error}: the transaction conflicted with a concurrent one and "
            "was rolled back; retry the unit of work"
        )
    if sqlstate.startswith("08") or sqlstate in ("57P01", "57P02", "57P03"):
        return DatabaseUnavailableError(f"lost the PostgreSQL connection: {driver_error}")
    if sqlstate == _PG_UNDEFINED_TABLE:
        table = getattr(driver_error, "table_name", None) or str(driver_error)
        return SchemaNotReadyError(table)
    if sqlstate in ("22P02", "22003", "22001", "22007", "22008"):
        # invalid text representation, out of range, too long, bad datetime
        return ValidationError(f"{entity or 'value'} rejected by PostgreSQL: {driver_error}")
    return None
