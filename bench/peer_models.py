"""The peers' models of our ``tasks`` table (the same table, its indexes and
trigger, for every contender), each in its library's documented style.
Imported only by ``bench/peers.py``, with the ``bench`` extra installed.

Each maps every column of the table, with its library's types for them, as
a user keeping the orchestrator's tasks with that library would: a model
of a few columns would read and convert a few values per row where ours
reads all of them. The models are made from our table's columns so that
they stay the same table.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Dialect,
    Enum,
    FetchedValue,
    Float,
    Integer,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, mapped_column
from tortoise import fields
from tortoise.models import Model

from orchestrator_db.models import Task
from orchestrator_db.types import JSONValue, UTCDateTime, UUIDString

#: The columns every contender's model maps: our table's.
COLUMNS: tuple[Column[Any], ...] = tuple(
    column for column in Task.__table__.c if isinstance(column, Column)
)


def _attribute(column: Column[Any]) -> str:
    return "metadata_" if column.name == "metadata" else column.name


def _default(column: Column[Any]) -> Any:
    """The value of a column's server default, as a Python value."""
    text = getattr(column.server_default, "arg", None)
    text = getattr(text, "text", text)  # a text() clause, or a string
    if not isinstance(text, str):
        return None
    if isinstance(column.type, Integer):
        return int(text)
    if isinstance(column.type, Float):
        return float(text)
    return text


# ------------------------------------------------------- advanced-alchemy


class IsoDateTime(TypeDecorator[datetime]):
    """The timestamps as SQLite holds them (ISO 8601 text), as a
    SQLAlchemy user would map them."""

    impl = String(24)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> str | None:
        return None if value is None else value.isoformat()

    def process_result_value(self, value: str | None, dialect: Dialect) -> datetime | None:
        return None if value is None else datetime.fromisoformat(value)


def _sqlalchemy_type(column: Column[Any]) -> Any:
    kind = column.type
    if isinstance(kind, UUIDString):
        return String(36).with_variant(postgresql.UUID(as_uuid=False), "postgresql")
    if isinstance(kind, JSONValue):
        return JSON().with_variant(postgresql.JSONB(), "postgresql")
    if isinstance(kind, UTCDateTime):
        return IsoDateTime().with_variant(DateTime(timezone=True), "postgresql")
    if isinstance(kind, Enum):
        return String(32)
    if isinstance(kind, Integer):
        return Integer()
    if isinstance(kind, Float):
        return Float()
    return Text()


class AABase(DeclarativeBase):
    pass


def _aa_model() -> type[AABase]:
    attributes: dict[str, Any] = {"__tablename__": "tasks"}
    for column in COLUMNS:
        attributes[_attribute(column)] = mapped_column(
            column.name,
            _sqlalchemy_type(column),
            primary_key=column.primary_key,
            nullable=column.nullable,
            # Left to the table's own default when not set.
            server_default=FetchedValue() if column.server_default is not None else None,
        )
    return type("AATask", (AABase,), attributes)


#: advanced-alchemy's side: a declarative model of every column.
AATask: Any = _aa_model()


class AATaskRepository(SQLAlchemyAsyncRepository[Any]):
    model_type = AATask


# ----------------------------------------------------------- Tortoise ORM


def _tortoise_field(column: Column[Any]) -> Any:
    kind, null = column.type, column.nullable
    options: dict[str, Any] = {"null": null, "source_field": column.name}
    if column.primary_key:
        return fields.UUIDField(primary_key=True, **options)
    default = _default(column)
    if default is not None:
        options["default"] = default
    if isinstance(kind, UUIDString):
        return fields.UUIDField(**options)
    if isinstance(kind, JSONValue):
        return fields.JSONField(**options)
    if isinstance(kind, UTCDateTime):
        if column.name == "created_at":
            return fields.DatetimeField(auto_now_add=True, **options)
        if column.name == "updated_at":
            return fields.DatetimeField(auto_now=True, **options)
        return fields.DatetimeField(**options)
    if isinstance(kind, Enum):
        return fields.CharField(max_length=32, **options)
    if isinstance(kind, Integer):
        return fields.IntField(**options)
    if isinstance(kind, Float):
        return fields.FloatField(**options)
    return fields.TextField(**options)


def _tortoise_model() -> type[Model]:
    attributes: dict[str, Any] = {_attribute(column): _tortoise_field(column) for column in COLUMNS}
    attributes["Meta"] = type("Meta", (), {"table": "tasks"})
    attributes["__module__"] = __name__
    return type("TortoiseTask", (Model,), attributes)


#: Tortoise's side: a model of every column.
TortoiseTask: Any = _tortoise_model()
