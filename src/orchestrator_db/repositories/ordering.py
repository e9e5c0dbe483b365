"""The orders ``list()`` and ``page()`` sort by, and keyset pagination on them.

Without ``order_by`` a listing follows the repository's keyset (``created_at``
then the primary key, covered by an index), compared as one row value. With
``order_by`` (``"-created_at"``, ``["status", "-priority"]``: attribute names,
``-`` for descending), the primary key follows as the tie-break, so that
every row has one place; the page after a cursor is then "after the last row
on the first key, or equal on it and after on the next...", written out key
by key, since directions may differ. NULLs sort last in either direction.
Text sorts by code point on both engines (``sorted_as_text``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, false, literal, or_, tuple_
from sqlalchemy.orm import InstrumentedAttribute

from orchestrator_db.errors import ValidationError
from orchestrator_db.types import sorted_as_text

#: The most attributes an order names.
MAX_ORDER_KEYS = 8


@dataclass(frozen=True)
class Key:
    attribute: InstrumentedAttribute[Any]
    descending: bool

    @property
    def nullable(self) -> bool:
        return bool(self.attribute.property.columns[0].nullable)

    @property
    def expression(self) -> Any:
        return sorted_as_text(self.attribute)

    def clause(self) -> Any:
        ordered = self.expression.desc() if self.descending else self.expression.asc()
        return ordered.nulls_last() if self.nullable else ordered

    def equal(self, value: Any, bound: Any) -> ColumnElement[bool]:
        """Rows whose value on this key is ``value``, bound as ``bound``."""
        if value is None:
            return self.attribute.is_(None)
        return self.expression == bound  # type: ignore[no-any-return]

    def after(self, value: Any, bound: Any) -> ColumnElement[bool]:
        """Rows strictly after ``value`` (bound as ``bound``) on this key alone."""
        if value is None:
            return false()  # NULLs come last: nothing is after them
        beyond = self.expression < bound if self.descending else self.expression > bound
        return or_(beyond, self.attribute.is_(None)) if self.nullable else beyond


@dataclass(frozen=True)
class Ordering:
    """The keys of a listing's order; ``spec`` names an order of the
    caller's (cursors remember it), ``None`` the default keyset."""

    keys: tuple[Key, ...]
    spec: str | None

    @property
    def columns(self) -> list[Any]:
        return [key.attribute.property.columns[0] for key in self.keys]

    def clauses(self) -> list[Any]:
        if self.spec is None:
            return [key.expression for key in self.keys]
        return [key.clause() for key in self.keys]

    def after(
        self, last: Sequence[Any], *, bound: Callable[[int, Key], Any] | None = None
    ) -> ColumnElement[bool]:
        """Rows after the row whose keys were ``last``; ``bound(i, key)``
        is the SQL the ``i``-th value is bound as (a ``bindparam`` for a
        statement built once), the values themselves by default."""
        binds = [
            literal(v, type_=k.attribute.type) if bound is None else bound(i, k)
            for i, (k, v) in enumerate(zip(self.keys, last, strict=True))
        ]
        if self.spec is None:  # one row value: what the keyset's index serves
            return tuple_(*self.clauses()) > tuple_(*binds)
        branches = []
        for index, key in enumerate(self.keys):
            same = [k.equal(v, b) for k, v, b in zip(self.keys[:index], last, binds, strict=False)]
            branches.append(and_(*same, key.after(last[index], binds[index])))
        return or_(*branches)


def ordering(
    order_by: Any,
    default: Sequence[InstrumentedAttribute[Any]],
    primary_key: Sequence[str],
    attribute: Callable[[str], InstrumentedAttribute[Any]],
) -> Ordering:
    """The ordering ``order_by`` asks for (see the module), its names
    checked with ``attribute``; the ``default`` keyset when ``None``."""
    if order_by is None:
        return Ordering(tuple(Key(a, descending=False) for a in default), None)
    names = [order_by] if isinstance(order_by, str) else order_by
    if not isinstance(names, list | tuple) or not names or len(names) > MAX_ORDER_KEYS:
        raise ValidationError(
            f"order_by must be an attribute name or a list of 1 to {MAX_ORDER_KEYS} of them, "
            "each prefixed with '-' for descending",
            field="order_by",
        )
    keys: list[Key] = []
    seen: set[str] = set()
    for name in names:
        if not isinstance(name, str):
            raise ValidationError("order_by names attributes by their names", field="order_by")
        descending = name.startswith("-")
        plain = name[1:] if descending else name
        if plain in seen:
            raise ValidationError(f"order_by names {plain!r} twice", field="order_by")
        seen.add(plain)
        keys.append(Key(attribute(plain), descending))
    for name in primary_key:
        if name not in seen:
            keys.append(Key(attribute(name), descending=False))
    spec = ",".join(("-" if k.descending else "") + k.attribute.key for k in keys)
    return Ordering(tuple(keys), spec)
