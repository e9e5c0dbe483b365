"""The parameter rows of a bulk insert (``Repository.add_many``).

One ``executemany`` (or, on PostgreSQL, ``COPY``; see the backends) of a
statement compiled once per model and dialect, with
parameters converted column by column by the columns' own bind processors, so
the values written are exactly those the ORM would write. Python-side
defaults are applied here (and set on the objects); a callable default of a
timestamp column is evaluated once per batch, so the rows of one insert share
their creation time, as they would with the database's clock.

Columns that are NULL in every row of a batch, and that no default would
fill, are left out of its INSERT: the rows are the same, and binding a
dozen NULL columns per row costs SQLite about a third of the insert.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Enum, Table, insert, inspect
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapper

from orchestrator_db import values as checks
from orchestrator_db.errors import ValidationError
from orchestrator_db.models.base import Base
from orchestrator_db.types import UTCDateTime, UUIDString, canonical_uuid, utc_now


class DefaultContext:
    """Stands in for SQLAlchemy's execution context when a Python-side column
    default is evaluated outside a statement; it may read the row so far."""

    __slots__ = ("row",)

    def __init__(self, row: dict[str, Any]) -> None:
        self.row = row

    def get_current_parameters(self, isolate_multiinsert_groups: bool = True) -> dict[str, Any]:
        return self.row


@dataclass(frozen=True)
class _Column:
    attribute: str
    process: Callable[[Any], Any] | None
    default: Any
    # The plain function behind a default SQLAlchemy wrapped to ignore its
    # context (like new_id): called directly, with no context to build.
    factory: Callable[[], Any] | None
    batch_time: bool
    server_default_only: bool
    is_uuid: bool
    # Whether the values need checking here: the package's own column types
    # check theirs as they convert them.
    check: bool


@dataclass(frozen=True)
class BulkRows:
    """Parameter rows of one batch and the columns (keys) they bind, in order."""

    keys: tuple[str, ...]
    rows: list[tuple[Any, ...]]


@dataclass(frozen=True)
class BulkInsertPlan:
    entity: str
    table: Table
    dialect: Dialect
    columns: tuple[_Column, ...]
    keys: tuple[str, ...]
    # INSERT statements by the keys they bind, compiled on first use.
    _statements: dict[tuple[str, ...], str] = field(default_factory=dict, compare=False)

    @classmethod
    def build(cls, model: type[Base], dialect: Dialect) -> BulkInsertPlan:
        mapper: Mapper[Any] = inspect(model)
        table = model.__table__
        assert isinstance(table, Table)
        compiled = insert(table).compile(dialect=dialect)
        keys = tuple(compiled.positiontup or ())
        columns = []
        for key in keys:
            column = table.c[key]
            default = column.default
            callable_default = default is not None and default.is_callable
            factory = getattr(default.arg, "__wrapped__", None) if callable_default else None
            is_uuid = isinstance(column.type, UUIDString)
            process = column.type.dialect_impl(dialect).bind_processor(dialect)
            if is_uuid and dialect.name == "sqlite":
                process = None  # rows() canonicalises, which is all it would do
            columns.append(
                _Column(
                    attribute=mapper.get_property_by_column(column).key,
                    process=process,
                    default=default,
                    factory=factory,
                    # A clock (utc_now), read once for the batch; a default
                    # that reads the row (a deadline's due time) is per row.
                    batch_time=factory is not None and isinstance(column.type, UTCDateTime),
                    server_default_only=default is None and column.server_default is not None,
                    is_uuid=is_uuid,
                    check=not hasattr(column.type, "validate")
                    and not isinstance(column.type, Enum),
                )
            )
        return cls(model.__name__, table, dialect, tuple(columns), keys)

    def sql(self, keys: tuple[str, ...]) -> str:
        """The INSERT binding ``keys`` (a subsequence of the plan's keys)."""
        statement = self._statements.get(keys)
        if statement is None:
            compiled = insert(self.table).compile(dialect=self.dialect, column_keys=list(keys))
            assert tuple(compiled.positiontup or ()) == keys, "parameters out of column order"
            statement = self._statements[keys] = compiled.string
        return statement

    def rows(self, dicts: list[dict[str, Any]]) -> BulkRows:
        """Parameter rows for ``dicts`` (the objects' instance dicts).

        Defaults and canonical UUIDs are written back into ``dicts``. Raises
        :class:`ValidationError` before anything is sent if a value is bad.
        """
        now = utc_now()
        by_column = []
        keys = []
        for key, column in zip(self.keys, self.columns, strict=True):
            name = column.attribute
            values = [d.get(name) for d in dicts]
            if column.check:  # the values given; defaults are the package's own
                try:
                    checks.check_many(self.table.c[key], values)
                except ValidationError as error:
                    raise ValidationError(f"{self.entity}.{error}", field=name) from None
            if None in values:
                self._fill_defaults(column, values, dicts, now)
                if column.default is None and values.count(None) == len(values):
                    continue  # NULL everywhere, and no default: leave it out
            if column.is_uuid:
                for index, value in enumerate(values):
                    if value is not None:
                        canonical = canonical_uuid(value, field=name)
                        if canonical is not value:
                            values[index] = dicts[index][name] = canonical
            process = column.process
            if process is not None:
                try:
                    values = [None if v is None else process(v) for v in values]
                except (LookupError, TypeError, ValueError) as error:
                    # Raised by the column's type, which checks its own values.
                    raise ValidationError(f"{self.entity}.{name}: {error}", field=name) from None
            by_column.append(values)
            keys.append(key)
        return BulkRows(tuple(keys), list(zip(*by_column, strict=True)))

    def _fill_defaults(
        self, column: _Column, values: list[Any], dicts: list[dict[str, Any]], now: Any
    ) -> None:
        name, default = column.attribute, column.default
        if default is None:
            if column.server_default_only:
                raise ValidationError(
                    f"{self.entity}.{name} has only a database-side default, which a bulk "
                    "insert cannot apply per row; set it or use add()",
                    field=name,
                )
            return
        missing = [index for index, value in enumerate(values) if value is None]
        factory = column.factory
        if column.batch_time or not (factory is not None or default.is_callable):
            # One value for every row: the batch's clock, or a constant.
            value = now if column.batch_time else default.arg
            for index in missing:
                values[index] = dicts[index][name] = value
            return
        for index in missing:
            row = dicts[index]
            value = factory() if factory is not None else default.arg(DefaultContext(row))
            values[index] = row[name] = value


_plans: dict[tuple[type[Base], str], BulkInsertPlan] = {}


def plan_for(model: type[Base], dialect: Dialect) -> BulkInsertPlan:
    key = (model, dialect.name)
    plan = _plans.get(key)
    if plan is None:
        plan = _plans[key] = BulkInsertPlan.build(model, dialect)
    return plan
