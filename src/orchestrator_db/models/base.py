"""Declarative base, naming convention and shared column helpers."""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, TypeAlias

from sqlalchemy import (
    BinaryExpression,
    BindParameter,
    ClauseElement,
    Column,
    ColumnElement,
    Enum,
    FetchedValue,
    Index,
    MetaData,
    event,
    inspect,
    text,
)
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql import visitors

from orchestrator_db import values
from orchestrator_db.errors import ValidationError
from orchestrator_db.types import UTCDateTime, UUIDString, new_id, utc_now, utc_now_sql

#: Every constraint gets a predictable name. Unnamed constraints break SQLite
#: batch migrations and make driver errors impossible to attribute.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONDoc: TypeAlias = dict[str, Any] | list[Any]
_ANONYMOUS_KEY = re.compile(r"%\(\d+ (.+)\)s")

#: ``Column.info`` marker of a timestamp column kept current by a database
#: trigger; :mod:`orchestrator_db.migrations.triggers` derives the trigger.
MAINTAINED_BY_TRIGGER = {"maintained_by": "trigger"}


class Base(AsyncAttrs, DeclarativeBase):
    """Base class of every orchestrator_db model."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    # A bare ``Mapped[datetime]`` must never fall back to a naive DateTime.
    type_annotation_map = {datetime: UTCDateTime()}

    #: Attributes shown by ``repr`` besides the primary key.
    __repr_attrs__: tuple[str, ...] = ()

    def __repr__(self) -> str:
        state = inspect(self)
        names = [
            state.mapper.get_property_by_column(c).key for c in state.mapper.primary_key
        ] + list(self.__repr_attrs__)
        # Never trigger a load from repr: expired attributes are shown as such.
        shown = ", ".join(f"{name}={self._repr_value(name, state.dict)}" for name in names)
        return f"{type(self).__name__}({shown})"

    def _repr_value(self, name: str, loaded: dict[str, Any]) -> str:
        return repr(loaded[name]) if name in loaded else "<not loaded>"


@event.listens_for(Base, "init", propagate=True)
def _assign_uuid_primary_key(target: Base, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Give a new object its UUID key at construction, not at flush.

    Code can then wire objects together by id before they are stored (task
    dependencies in ``submit_many``, say), and errors can name them.
    """
    key = _uuid_key(type(target))
    if key is not None and kwargs.get(key) is None:
        kwargs[key] = new_id()


@functools.cache
def _uuid_key(model: type[Base]) -> str | None:
    """The attribute of ``model``'s primary key if it is one UUID column."""
    mapper = inspect(model)
    if len(mapper.primary_key) != 1:
        return None
    column = mapper.primary_key[0]
    if not isinstance(column.type, UUIDString):
        return None
    return mapper.get_property_by_column(column).key


def check_values(
    model: type[Base], held: Mapping[str, Any], names: Iterable[str] | None = None
) -> dict[str, Any]:
    """Check the attribute values ``held`` (or only those of ``names``)
    against ``model``'s columns (see :mod:`orchestrator_db.values`), before
    anything is sent: a refused value is a
    :class:`~orchestrator_db.errors.ValidationError` naming the attribute.
    Returns the values the check normalised (a timestamp in UTC, to the
    millisecond; an enumeration's member for its value; a UUID's canonical
    text), as they will be stored."""
    attributes = inspect(model).column_attrs
    normalised: dict[str, Any] = {}
    for name in list(held) if names is None else names:
        prop = attributes.get(name)
        if prop is None or name not in held:
            continue
        check = values.for_column(prop.columns[0])
        if check is not None:
            value = held[name]
            try:
                checked = check(value)
            except ValidationError as error:
                raise ValidationError(f"{model.__name__}.{error}", field=name) from None
            if checked is not value:
                normalised[name] = checked
    return normalised


def check_bound_values(criterion: ClauseElement) -> None:
    """Check the values bound in a SQL expression, as :func:`check_values`
    checks attribute values: by the column a value is compared with (a
    string compared with an integer column is bound as a string), else by
    the parameter's own type."""
    compared: dict[int, ColumnElement[Any]] = {}
    for element in visitors.iterate(criterion):
        if isinstance(element, BinaryExpression):
            left, right = element.left, element.right
            if isinstance(right, BindParameter) and isinstance(left, Column):
                compared[id(right)] = left
            elif isinstance(left, BindParameter) and isinstance(right, Column):
                compared[id(left)] = right
            continue
        if not isinstance(element, BindParameter) or element.value is None:
            continue
        # An anonymous parameter's key is "%(<id> <name>)s".
        anonymous = _ANONYMOUS_KEY.fullmatch(element.key)
        field = anonymous.group(1) if anonymous else element.key
        column = compared.get(id(element))
        check = (
            values.for_column(column)
            if column is not None
            else values.for_type(element.type, field)
        )
        if check is None:
            continue
        if element.expanding:
            for item in values.in_list(element.value, field):
                check(item)
        else:
            check(element.value)


def partial_index(name: str, *columns: Any, where: str) -> Index:
    """An index of the rows matching ``where`` (SQL both engines read alike)."""
    predicate = text(where)
    return Index(name, *columns, sqlite_where=predicate, postgresql_where=predicate)


def enum_type(enum_class: type[enum.Enum], name: str) -> Enum:
    """A portable enum column: VARCHAR plus a named CHECK on every dialect.

    Native PostgreSQL enums are avoided on purpose: widening one needs
    ``ALTER TYPE`` outside a transaction, while a CHECK is rewritten in the
    same transactional migration on both engines.
    """
    return Enum(
        enum_class,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=32,
        validate_strings=True,
        values_callable=lambda members: [member.value for member in members],
    )


def _same_as_created_at(context: DefaultExecutionContext) -> datetime:
    created = context.get_current_parameters().get("created_at")  # type: ignore[no-untyped-call]
    return created if isinstance(created, datetime) else utc_now()


class CreatedAt:
    """``created_at``: set once on insert, by Python or by the database."""

    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime(),
        default=utc_now,
        server_default=utc_now_sql(),
        nullable=False,
        sort_order=1000,
    )


class Timestamps(CreatedAt):
    """``created_at`` plus an ``updated_at`` kept current by a database trigger.

    The trigger (see :func:`orchestrator_db.migrations.triggers.updated_at_trigger`) is the
    single source of truth, so the ORM does not set ``updated_at`` on update;
    it only knows the database changed it and refetches it when needed.
    """

    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(),
        default=_same_as_created_at,
        server_default=utc_now_sql(),
        server_onupdate=FetchedValue(),
        nullable=False,
        info=dict(MAINTAINED_BY_TRIGGER),
        sort_order=1001,
    )
