"""The statements of ``list()`` and ``page()``, built once per shape.

Building a select costs about as much as an empty listing's whole round
trip, and SQLAlchemy computes a statement's cache key (to find its compiled
form) once per statement object. A listing whose filters are attribute
values (``status="ready"``, ``session_id=None``) has a *shape*: which
attributes it filters on and which of them on NULL, its order, whether it
has an offset and a limit, and which values of its cursor are NULL. Each
shape is built once, with every value a bound parameter, and run by the
ORM as any query (its loader makes objects faster than rows made objects
one by one, and keeps the session's identity map and autoflush). Listings
with SQL criteria, named filters or lists of values are built per call.

``count()`` and ``exists()`` with such filters have shapes too
(:func:`tallied`): Core statements returning one value, which the executor
sends straight to the driver.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Integer, Select, bindparam, func, literal, select
from sqlalchemy.orm import InstrumentedAttribute

from orchestrator_db._execution.compiled import LRU
from orchestrator_db.models.base import Base
from orchestrator_db.repositories.ordering import Key, Ordering

#: Shapes kept (per process), the least recently used dropped first.
MAX_SHAPES = 1024


@dataclass(frozen=True)
class Request:
    """One call's listing: its values checked, its order known."""

    model: type[Base]
    owner: type[Any]  # the repository class (its keyset is the default order)
    filters: Mapping[str, Any]  # attribute name: checked value (None: IS NULL)
    order: Ordering
    limit: int | None
    offset: int
    after: Sequence[Any] | None  # the cursor's values


_built: LRU[tuple[Any, ...], Select[Any]] = LRU(MAX_SHAPES)


def shaped(
    request: Request, attribute: Callable[[str], InstrumentedAttribute[Any]]
) -> tuple[Select[Any], dict[str, Any]]:
    """The statement of ``request``'s shape (a select of its model) and its
    parameters."""
    nulls = tuple(sorted((name, value is None) for name, value in request.filters.items()))
    after = None if request.after is None else tuple(v is None for v in request.after)
    key = (
        request.owner,
        request.model,
        nulls,
        tuple((k.attribute.key, k.descending) for k in request.order.keys),
        request.order.spec,
        request.offset > 0,
        request.limit is not None,
        after,
    )
    statement = _built.get(key, lambda: _build(request, nulls, attribute))
    params = {f"filter_{name}": value for name, value in request.filters.items()}
    if request.after is not None:
        params.update({f"after_{i}": value for i, value in enumerate(request.after)})
    if request.offset > 0:
        params["offset"] = request.offset
    if request.limit is not None:
        params["limit"] = request.limit
    return statement, params


def tallied(
    model: type[Base],
    owner: type[Any],
    filters: Mapping[str, Any],
    attribute: Callable[[str], InstrumentedAttribute[Any]],
    *,
    exists: bool,
) -> tuple[Select[Any], dict[str, Any]]:
    """The statement counting the rows of ``model`` that ``filters`` (checked
    values, ``None``: IS NULL) select, or with ``exists`` returning 1 for the
    first of them; and its parameters."""
    nulls = tuple(sorted((name, value is None) for name, value in filters.items()))

    def build() -> Select[Any]:
        criteria = _filtering(nulls, attribute)
        if exists:
            return select(literal(1)).select_from(model).where(*criteria).limit(1)
        return select(func.count()).select_from(model).where(*criteria)

    statement = _built.get(("exists" if exists else "count", owner, model, nulls), build)
    return statement, {f"filter_{name}": value for name, value in filters.items()}


def _filtering(
    nulls: tuple[tuple[str, bool], ...], attribute: Callable[[str], InstrumentedAttribute[Any]]
) -> list[ColumnElement[bool]]:
    criteria = []
    for name, is_null in nulls:
        column = attribute(name)
        wanted = bindparam(f"filter_{name}", type_=column.type)
        criteria.append(column.is_(None) if is_null else column == wanted)
    return criteria


def _build(
    request: Request,
    nulls: tuple[tuple[str, bool], ...],
    attribute: Callable[[str], InstrumentedAttribute[Any]],
) -> Select[Any]:
    criteria = _filtering(nulls, attribute)
    if request.after is not None:
        criteria.append(request.order.after(request.after, bound=_after))
    statement = select(request.model).where(*criteria).order_by(*request.order.clauses())
    if request.offset > 0:
        statement = statement.offset(bindparam("offset", type_=Integer()))
    if request.limit is not None:
        statement = statement.limit(bindparam("limit", type_=Integer()))
    return statement


def _after(index: int, key: Key) -> Any:
    return bindparam(f"after_{index}", type_=key.attribute.type)
