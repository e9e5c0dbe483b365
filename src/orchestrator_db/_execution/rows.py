"""Rows turned into model objects, without the ORM's loader.

The ORM's loader costs more than a primary-key read itself (it sets up
per-attribute loaders on every execution); a plain row of the table's
columns becomes an object for a fraction of that. An object built here is
exactly what loading and then detaching it would give: its identity, every
column set and none modified. :func:`adopt` makes it the session's (or
returns the object already loaded for the row); :func:`detached` leaves it
without one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import (
    Column,
    ColumnElement,
    Select,
    Table,
    Update,
    bindparam,
    inspect,
    select,
    update,
)
from sqlalchemy.orm import Mapper, Session, configure_mappers
from sqlalchemy.orm.attributes import instance_state, set_committed_value

from orchestrator_db import values
from orchestrator_db.models.base import MAINTAINED_BY_TRIGGER, Base
from orchestrator_db.types import utc_now_sql

ModelT = TypeVar("ModelT", bound=Base)


@dataclass(frozen=True)
class RowLayout:
    """A model's table columns in order, the attribute each one loads, and
    a primary-key lookup that returns them."""

    mapper: Mapper[Any]
    columns: tuple[Column[Any], ...]
    keys: tuple[str, ...]
    primary_key: tuple[int, ...]  # positions of the key columns in ``columns``
    by_key: Select[Any]  # ``columns`` where the key is ``:key_0``, ``:key_1``...
    key_columns: tuple[ColumnElement[Any], ...]  # the primary key's columns, in key order
    key_checks: tuple[Callable[[Any], Any], ...]  # each key part's check (see values)


@functools.cache
def row_layout(model: type[Base]) -> RowLayout:
    # Instrumentation is complete only once the mappers are configured, which
    # the ORM does on its first query: a process may build objects before that.
    configure_mappers()
    mapper: Mapper[Any] = inspect(model)
    table = mapper.local_table
    assert isinstance(table, Table)
    columns = tuple(table.c)
    keys = tuple(mapper.get_property_by_column(column).key for column in columns)
    primary_key = tuple(columns.index(column) for column in mapper.primary_key)
    by_key = select(*columns).where(
        *(column == bindparam(f"key_{i}") for i, column in enumerate(mapper.primary_key))
    )
    key_columns = tuple(mapper.primary_key)
    key_checks = tuple(
        values.for_type(column.type, "key", indexed=True) or (lambda value: value)
        for column in key_columns
    )
    return RowLayout(mapper, columns, keys, primary_key, by_key, key_columns, key_checks)


@functools.cache
def maintained_by_trigger(model: type[Base]) -> tuple[Column[Any], ...]:
    """The columns of ``model`` an ``updated_at`` trigger keeps current."""
    return tuple(
        column
        for column in row_layout(model).columns
        if MAINTAINED_BY_TRIGGER.items() <= column.info.items()
    )


@functools.cache
def updating(model: type[Base], names: frozenset[str]) -> Update:
    """One statement for ``update()``: set the attributes ``names`` (bound
    as ``:set_<name>``) of the row whose key is ``:key_0``, ``:key_1``...,
    and return the layout's columns. A column a trigger keeps current
    (``updated_at``) that ``names`` leave out is set to now by the statement
    itself, as the trigger would, so that RETURNING shows the value the row
    keeps on SQLite too (there the trigger writes after RETURNING)."""
    layout = row_layout(model)
    mapper = layout.mapper
    assignments: dict[Column[Any], Any] = {}
    for name in sorted(names):
        column = mapper.get_property(name).columns[0]
        assignments[column] = bindparam(f"set_{name}", type_=column.type)
    for column in maintained_by_trigger(model):
        if column not in assignments:
            assignments[column] = utc_now_sql()
    table = mapper.local_table
    assert isinstance(table, Table)
    key_columns = enumerate(mapper.primary_key)
    return (
        update(table)
        .where(*(column == bindparam(f"key_{i}") for i, column in key_columns))
        .values(assignments)
        .returning(*layout.columns)
    )


def detached(model: type[ModelT], row: Sequence[Any]) -> ModelT:
    """An object of ``model`` for ``row`` (the table's columns in order, extra
    values ignored), as if loaded and then detached."""
    layout = row_layout(model)
    built: ModelT = _built(layout, row, _identity(layout, row))
    return built


def loaded(
    session: Session, model: type[ModelT], row: Sequence[Any], *, refresh: bool
) -> ModelT | None:
    """The object ``session`` already holds for ``row``, if any; with
    ``refresh`` its attributes are overwritten by the row (what
    ``populate_existing`` does), for rows a statement has just changed."""
    layout = row_layout(model)
    found: ModelT | None = session.identity_map.get(_identity(layout, row))
    if found is not None and refresh:
        _refresh(layout, found, row)
    return found


def adopt(session: Session, model: type[ModelT], row: Sequence[Any], *, refresh: bool) -> ModelT:
    """``session``'s object for ``row``: the one it holds (see :func:`loaded`)
    or a new persistent one. (Written out: every read by key comes here.)"""
    layout = row_layout(model)
    identity = _identity(layout, row)
    found: ModelT | None = session.identity_map.get(identity)
    if found is not None:
        if refresh:
            _refresh(layout, found, row)
        return found
    obj: ModelT = _built(layout, row, identity)
    session.add(obj)
    return obj


def overwrite(model: type[Base], obj: Any, row: Sequence[Any]) -> None:
    """Set every column of ``obj`` (held or detached) from ``row``, as
    loaded: for rows a statement has just changed."""
    _refresh(row_layout(model), obj, row)


def _identity(layout: RowLayout, row: Sequence[Any]) -> Any:
    return layout.mapper.identity_key_from_primary_key(tuple([row[i] for i in layout.primary_key]))


def _built(layout: RowLayout, row: Sequence[Any], identity: Any) -> Any:
    obj = layout.mapper.class_manager.new_instance()
    instance_state(obj).dict.update(zip(layout.keys, row, strict=False))
    give_identity(obj, identity)
    return obj


def _refresh(layout: RowLayout, obj: Any, row: Sequence[Any]) -> None:
    for name, value in zip(layout.keys, row, strict=False):
        set_committed_value(obj, name, value)


def mark_detached(model: type[Base], items: Iterable[Any]) -> None:
    """Give inserted objects, every column set, their identity, as if loaded
    and then detached.

    The public ``make_transient_to_detached`` does the same but also works out
    which attributes to expire, which costs more than the insert itself at ten
    thousand rows; every column was just written, so none are.
    """
    mapper: Mapper[Any] = inspect(model)
    keys = [mapper.get_property_by_column(c).key for c in mapper.primary_key]
    for obj in items:
        values = instance_state(obj).dict
        give_identity(obj, mapper.identity_key_from_primary_key(tuple([values[k] for k in keys])))


def give_identity(obj: Any, identity_key: Any) -> None:
    """Make ``obj``, with every column set, a detached object of identity
    ``identity_key``."""
    state = instance_state(obj)
    state.key = identity_key
    state._commit_all(state.dict)
