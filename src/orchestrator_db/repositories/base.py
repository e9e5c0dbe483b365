"""The generic repository every concrete repository builds on.

A concrete repository is one line (``model_type = Task``) plus its domain
queries. Repositories flush, never commit: the unit of work owns the
transaction. Any database error rolls the unit of work back and surfaces as a
typed error from :mod:`orchestrator_db.errors`.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import functools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Generic, NoReturn, TypeVar

from sqlalchemy import (
    Column,
    ColumnElement,
    Integer,
    Select,
    Table,
    bindparam,
    delete,
    func,
    inspect,
    literal,
    select,
    tuple_,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import (
    InstrumentedAttribute,
    Mapper,
    configure_mappers,
)
from sqlalchemy.orm.attributes import instance_state, set_committed_value
from sqlalchemy.sql.expression import Executable

from orchestrator_db.error_translation import is_database_error, translate
from orchestrator_db.errors import (
    ForeignKeyViolationError,
    NotFoundError,
    ValidationError,
)
from orchestrator_db.models.base import Base
from orchestrator_db.repositories import bulk, direct
from orchestrator_db.types import UUIDString, canonical_uuid, utc_now
from orchestrator_db.unit_connection import unit_connection

ModelT = TypeVar("ModelT", bound=Base)
RowT = TypeVar("RowT")
Criterion = ColumnElement[bool]
FilterBuilder = Callable[[Any], Criterion]


def cutoff(older_than: timedelta | datetime) -> datetime:
    """The instant ``older_than`` names: an age back from now, or an instant."""
    if isinstance(older_than, datetime):
        return older_than
    if older_than < timedelta(0):
        raise ValidationError("older_than must not be negative", field="older_than")
    return utc_now() - older_than


@dataclass(frozen=True)
class Page(Generic[ModelT]):
    """One page of a keyset-paginated listing.

    Pass ``next_cursor`` as ``after`` to get the following page; it is
    ``None`` on the last page.
    """

    items: list[ModelT]
    next_cursor: str | None

    @property
    def has_more(self) -> bool:
        return self.next_cursor is not None


@dataclass(frozen=True)
class RowLayout:
    """A model's table columns in order, the attribute each one loads, and
    a primary-key lookup that returns them (see :meth:`Repository._adopt`)."""

    mapper: Mapper[Any]
    columns: tuple[Column[Any], ...]
    keys: tuple[str, ...]
    primary_key: tuple[int, ...]  # positions of the key columns in ``columns``
    by_key: Select[Any]  # ``columns`` where the key is ``:key_0``, ``:key_1``...


@functools.cache
def row_layout(model: type[Base]) -> RowLayout:
    # Instrumentation is complete only once the mappers are configured, which
    # the ORM does on its first query: a process may adopt rows before that.
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
    return RowLayout(mapper, columns, keys, primary_key, by_key)


def detached_from_row(model: type[ModelT], row: Sequence[Any]) -> ModelT:
    """An object of ``model`` for ``row`` (the table's columns in order), as if
    loaded and then detached: it has its identity, and no unit of work."""
    layout = row_layout(model)
    obj: ModelT = layout.mapper.class_manager.new_instance()
    instance_state(obj).dict.update(zip(layout.keys, row, strict=False))
    key = tuple([row[i] for i in layout.primary_key])
    bulk.give_identity(obj, layout.mapper.identity_key_from_primary_key(key))
    return obj


class Repository(Generic[ModelT]):
    """Typed data access for one model inside a unit of work.

    Subclasses set :attr:`model_type`, and may add keyword filters
    (:attr:`named_filters`), fields ``update`` must not touch (:attr:`protected_fields`)
    and the keyset order of :meth:`page` (:attr:`keyset`).
    """

    model_type: type[ModelT]
    #: Named filters beyond "column equals value", e.g. ``created_after``.
    named_filters: ClassVar[Mapping[str, FilterBuilder]] = {}
    #: Attributes changed only through domain methods (``update`` refuses them).
    protected_fields: ClassVar[frozenset[str]] = frozenset()
    #: Attributes that order :meth:`list` and :meth:`page`; by default
    #: ``created_at`` then the primary key, which must be covered by an index.
    keyset: ClassVar[tuple[str, ...]] = ()

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # ------------------------------------------------------------ metadata

    @property
    def entity(self) -> str:
        return self.model_type.__name__

    @classmethod
    def _mapper(cls) -> Mapper[ModelT]:
        return inspect(cls.model_type)

    @classmethod
    def _keyset_attributes(cls) -> builtins.list[InstrumentedAttribute[Any]]:
        mapper = cls._mapper()
        names = cls.keyset or (
            ("created_at",) if "created_at" in mapper.column_attrs else ()
        ) + tuple(mapper.get_property_by_column(c).key for c in mapper.primary_key)
        return [getattr(cls.model_type, name) for name in names]

    def _attribute(self, name: str) -> InstrumentedAttribute[Any]:
        attrs = self._mapper().column_attrs
        if name not in attrs:
            valid = sorted([*attrs.keys(), *self.named_filters])
            raise ValidationError(
                f"{self.entity} has no attribute or filter {name!r}; expected one of: "
                f"{', '.join(valid)}",
                field=name,
            )
        attribute: InstrumentedAttribute[Any] = getattr(self.model_type, name)
        return attribute

    def _criteria(
        self, where: Sequence[Criterion], filters: Mapping[str, Any]
    ) -> builtins.list[Criterion]:
        criteria = list(where)
        for name, value in filters.items():
            builder = self.named_filters.get(name)
            if builder is not None:
                if value is not None:
                    criteria.append(builder(value))
                continue
            attribute = self._attribute(name)
            if value is None:
                criteria.append(attribute.is_(None))
            elif isinstance(value, list | tuple | set | frozenset):
                criteria.append(attribute.in_(list(value)))
            else:
                criteria.append(attribute == value)
        return criteria

    def _primary_key_criteria(self, key: Any) -> builtins.list[Criterion]:
        columns = self._mapper().primary_key
        return [
            column == value for column, value in zip(columns, self._key_parts(key), strict=True)
        ]

    def _key_parts(self, key: Any) -> tuple[Any, ...]:
        parts = key if isinstance(key, tuple) else (key,)
        size = len(row_layout(self.model_type).primary_key)
        if len(parts) != size:
            raise ValidationError(f"{self.entity} key has {size} part(s), got {key!r}", field="key")
        return parts

    # ------------------------------------------------------------- errors

    async def _raise_translated(
        self, error: Exception, key: Any = None, values: Mapping[str, Any] | None = None
    ) -> NoReturn:
        """Raise the typed error for ``error``; roll back if the database failed.

        After a failed statement PostgreSQL refuses everything until the
        transaction ends, while SQLite carries on: rolling back here makes
        both engines behave the same, and makes a failed unit of work leave
        nothing behind.
        """
        translated = translate(error, entity=self.entity, key=key)
        if translated is None:
            raise error
        if is_database_error(error):
            await self.session.rollback()
            if (
                isinstance(translated, ForeignKeyViolationError)
                and translated.constraint is None
                and values
            ):
                constraint = await self._missing_parent(values)
                translated = ForeignKeyViolationError(self.entity, key, constraint)
        raise translated from error

    async def _missing_parent(self, values: Mapping[str, Any]) -> str | None:
        """Name the foreign key whose parent row is missing (SQLite does not)."""
        table = self.model_type.__table__
        assert isinstance(table, Table)
        for constraint in table.foreign_key_constraints:
            pairs = [
                (element.column, values.get(element.parent.key)) for element in constraint.elements
            ]
            if any(value is None for _, value in pairs):
                continue
            probe = select(literal(1)).where(*(column == value for column, value in pairs))
            try:
                found = (await self.session.execute(probe.limit(1))).first()
            except SQLAlchemyError:
                return None
            if found is None:
                return str(constraint.name)
        return None

    @classmethod
    def _database_generates_keys(cls) -> bool:
        """Integer keys without a Python default come from the database."""
        return any(
            isinstance(column.type, Integer) and column.default is None
            for column in cls._mapper().primary_key
        )

    def _check_instance(self, obj: object) -> ModelT:
        if not isinstance(obj, self.model_type):
            raise ValidationError(
                f"{type(self).__name__} stores {self.entity}, got {type(obj).__name__}"
            )
        return obj

    def _key_of(self, obj: ModelT) -> Any:
        mapper = self._mapper()
        values = tuple(
            instance_state(obj).dict.get(mapper.get_property_by_column(c).key)
            for c in mapper.primary_key
        )
        return values[0] if len(values) == 1 else values

    def _prepare(self, obj: ModelT) -> None:
        """Fill in the primary key and canonicalise UUIDs before the flush.

        With the key known up front, an error raised by the flush can name the
        row; with UUIDs canonical, the object matches what the database holds.
        """
        mapper = self._mapper()
        state_dict = instance_state(obj).dict
        for column in mapper.primary_key:
            key = mapper.get_property_by_column(column).key
            default = column.default
            if state_dict.get(key) is None and default is not None and default.is_callable:
                setattr(obj, key, default.arg(bulk.DefaultContext(state_dict)))
        for prop in mapper.column_attrs:
            value = state_dict.get(prop.key)
            if value is not None and isinstance(prop.columns[0].type, UUIDString):
                canonical = canonical_uuid(value, field=prop.key)
                if canonical != value:
                    setattr(obj, prop.key, canonical)

    # ----------------------------------------------------------- commands

    async def add(self, obj: ModelT) -> ModelT:
        """Add ``obj`` and flush it; the database has checked it on return."""
        self._check_instance(obj)
        self._prepare(obj)
        self.session.add(obj)
        try:
            await self.session.flush()
        except Exception as error:
            await self._raise_translated(error, self._key_of(obj), instance_state(obj).dict)
        return obj

    async def add_many(self, objs: Iterable[ModelT]) -> builtins.list[ModelT]:
        """Insert many objects with one multi-row statement (executemany).

        Defaults are filled in on the objects (ids, timestamps, statuses).
        Like SQLAlchemy's bulk operations, this path does not track the
        returned objects in the unit of work: they come back *detached* with
        their identity. Read them freely; to change one, use :meth:`update`
        (or ``uow.session.add(obj)`` to re-attach it).

        Models whose keys the database generates (integer ids) go through the
        ORM's own batched INSERT ... RETURNING instead, and stay attached.
        """
        items = [self._check_instance(obj) for obj in objs]
        if not items:
            return []
        if self._database_generates_keys():
            self.session.add_all(items)
            try:
                await self.session.flush()
            except Exception as error:
                await self._raise_translated(error)
            return items
        try:
            # Pending objects (parents added with add()) must exist first.
            await self.session.flush()
            connection = await self.session.connection()
        except Exception as error:
            await self._raise_translated(error)
        plan = bulk.plan_for(self.model_type, connection.dialect)
        rows = plan.rows([instance_state(obj).dict for obj in items])
        try:
            await plan.execute(connection, rows)
        except Exception as error:
            await self._raise_translated(error)
        bulk.mark_detached(self.model_type, items)
        return items

    async def update(self, key: Any, **values: Any) -> ModelT:
        """Set attributes of the row ``key`` and return it, refreshed."""
        mapper = self._mapper()
        primary = {mapper.get_property_by_column(c).key for c in mapper.primary_key}
        for name in values:
            self._attribute(name)
            if name in primary:
                raise ValidationError(f"the primary key of {self.entity} cannot change", field=name)
            if name in self.protected_fields:
                raise ValidationError(
                    f"{self.entity}.{name} is managed by the repository's domain methods; "
                    "it cannot be set with update()",
                    field=name,
                )
        obj = await self.get(key)
        for name, value in values.items():
            setattr(obj, name, value)
        await self._flush_and_refresh(obj, key)
        return obj

    async def _flush_and_refresh(self, obj: ModelT, key: Any) -> None:
        """Flush changes to ``obj`` and reload what triggers changed.

        SQLite's RETURNING shows values as the statement wrote them, not as
        triggers left them, so trigger-maintained columns are re-read.
        """
        try:
            await self.session.flush()
            refresh = [
                prop.key
                for prop in self._mapper().column_attrs
                if prop.columns[0].server_onupdate is not None
                and prop.key not in instance_state(obj).dict
            ]
            if refresh:
                await self.session.refresh(obj, attribute_names=refresh)
        except Exception as error:
            await self._raise_translated(error, key, instance_state(obj).dict)

    async def delete(self, key: Any) -> bool:
        """Delete the row ``key``; ``False`` if there was none.

        Rows that reference it are handled by the database's ON DELETE rules.
        """
        statement = delete(self.model_type).where(*self._primary_key_criteria(key))
        try:
            result = await self.session.execute(statement)
        except Exception as error:
            await self._raise_translated(error, key)
        return bool(getattr(result, "rowcount", 0))

    # ------------------------------------------------------------ queries

    async def get(self, key: Any, *, for_update: bool = False) -> ModelT:
        """The row ``key``; :class:`NotFoundError` if it does not exist.

        ``for_update`` locks the row until the unit of work ends (PostgreSQL;
        SQLite write units of work hold the database write lock already).
        """
        obj = await self.get_or_none(key, for_update=for_update)
        if obj is None:
            raise NotFoundError(self.entity, key)
        return obj

    async def get_or_none(self, key: Any, *, for_update: bool = False) -> ModelT | None:
        layout = row_layout(self.model_type)
        parts = self._key_parts(key)
        try:
            if for_update or layout.mapper.identity_key_from_primary_key(parts) in (
                self.session.identity_map
            ):
                # Loaded already (no query at all), or to be locked: the ORM's own get.
                return await self.session.get(
                    self.model_type, key, with_for_update=for_update, populate_existing=for_update
                )
            session = self.session
            if session.autoflush and (session.new or session.deleted or session.dirty):
                await session.flush()  # as the ORM would: a pending row is found
        except Exception as error:
            await self._raise_translated(error, key)
        params = {f"key_{i}": part for i, part in enumerate(parts)}
        rows = await self._rows(layout.by_key, params, key=key)
        return self._adopt(rows[0]) if rows else None

    async def _connection(self) -> AsyncConnection:
        """The unit of work's connection (see :func:`.unit_connection`)."""
        return await unit_connection(self.session)

    async def _rows(
        self, statement: Executable, params: Mapping[str, Any] | None = None, *, key: Any = None
    ) -> builtins.list[Any]:
        """The rows of a Core statement, run in this unit of work (see
        :func:`.direct.fetch_rows`). Database errors are raised translated
        (see :meth:`_raise_translated`)."""
        try:
            return await direct.fetch_rows(
                await self._connection(),
                statement,
                params,
                session_connection=self.session.connection,
            )
        except Exception as error:
            await self._raise_translated(error, key)

    async def list(
        self,
        *where: Criterion,
        limit: int | None = None,
        offset: int = 0,
        **filters: Any,
    ) -> builtins.list[ModelT]:
        """Rows matching ``where`` and ``filters``, in keyset order.

        ``filters`` are ``attribute=value`` (``None`` means IS NULL, a list
        means IN) or a named filter of the repository.
        """
        if limit is not None and limit < 0:
            raise ValidationError("limit must not be negative", field="limit")
        if offset < 0:
            raise ValidationError("offset must not be negative", field="offset")
        statement = (
            select(self.model_type)
            .where(*self._criteria(where, filters))
            .order_by(*self._keyset_attributes())
            .offset(offset or None)
            .limit(limit)
        )
        return await self._scalars(statement)

    async def page(
        self,
        *where: Criterion,
        limit: int = 50,
        after: str | None = None,
        **filters: Any,
    ) -> Page[ModelT]:
        """A page of ``limit`` rows after the cursor ``after`` (keyset pagination).

        Unlike offsets, the cost of a page does not grow with its depth, and
        rows inserted meanwhile never shift a page.
        """
        if limit < 1:
            raise ValidationError("limit must be at least 1", field="limit")
        keyset = self._keyset_attributes()
        criteria = self._criteria(where, filters)
        if after is not None:
            values = self._decode_cursor(after, len(keyset))
            bound = [literal(v, type_=a.type) for a, v in zip(keyset, values, strict=True)]
            criteria.append(tuple_(*keyset) > tuple_(*bound))
        statement = select(self.model_type).where(*criteria).order_by(*keyset).limit(limit + 1)
        rows = await self._scalars(statement)
        if len(rows) <= limit:
            return Page(rows, None)
        rows = rows[:limit]
        last = instance_state(rows[-1]).dict
        return Page(rows, self._encode_cursor([last[a.key] for a in keyset]))

    async def count(self, *where: Criterion, **filters: Any) -> int:
        statement = (
            select(func.count()).select_from(self.model_type).where(*self._criteria(where, filters))
        )
        try:
            return int((await self.session.execute(statement)).scalar_one())
        except Exception as error:
            await self._raise_translated(error)

    async def exists(self, *where: Criterion, **filters: Any) -> bool:
        statement = (
            select(literal(1))
            .select_from(self.model_type)
            .where(*self._criteria(where, filters))
            .limit(1)
        )
        try:
            return (await self.session.execute(statement)).first() is not None
        except Exception as error:
            await self._raise_translated(error)

    async def _bulk_update(
        self, statement: Any, params: Mapping[str, Any] | None = None
    ) -> builtins.list[Any]:
        """Run an UPDATE ... RETURNING <primary key>; refresh the loaded
        objects it changed; return their keys.

        Bulk updates bypass the identity map (their values may be SQL, such
        as the database's clock), so objects already loaded in this unit of
        work are re-read rather than left stale.
        """
        try:
            result = await self.session.execute(
                statement, params, execution_options={"synchronize_session": False}
            )
        except Exception as error:
            await self._raise_translated(error)
        keys = list(result.scalars())
        mapper = self._mapper()
        for key in keys:
            loaded = self.session.identity_map.get(mapper.identity_key_from_primary_key((key,)))
            if loaded is not None:
                await self.session.refresh(loaded)
        return keys

    def _adopt(self, row: Sequence[Any], *, refresh: bool = False) -> ModelT:
        """The object of this unit of work for ``row``, whose first values are
        the model's table columns in order (extra values are ignored).

        The ORM's loader costs more than a primary-key read itself (it sets
        up per-attribute loaders on every execution); a plain row becomes a
        persistent object for a fraction of that. The object already loaded
        for the key is returned if there is one, and with ``refresh`` its
        attributes are overwritten by the row (what ``populate_existing``
        does), for rows the statement has just changed.
        """
        loaded = self._loaded(row, refresh=refresh)
        if loaded is not None:
            return loaded
        obj = detached_from_row(self.model_type, row)
        self.session.add(obj)
        return obj

    def _loaded(self, row: Sequence[Any], *, refresh: bool) -> ModelT | None:
        """The object already loaded for ``row`` (as for :meth:`_adopt`), if any."""
        layout = row_layout(self.model_type)
        key = tuple(row[i] for i in layout.primary_key)
        loaded: ModelT | None = self.session.identity_map.get(
            layout.mapper.identity_key_from_primary_key(key)
        )
        if loaded is not None and refresh:
            for name, value in zip(layout.keys, row, strict=False):
                set_committed_value(loaded, name, value)
        return loaded

    async def _scalars(self, statement: Select[RowT]) -> builtins.list[RowT]:
        try:
            return list((await self.session.scalars(statement)).all())
        except Exception as error:
            await self._raise_translated(error)

    # ------------------------------------------------------------- cursor

    @staticmethod
    def _encode_cursor(values: Sequence[Any]) -> str:
        encoded = [{"dt": v.isoformat()} if isinstance(v, datetime) else v for v in values]
        raw = json.dumps(encoded, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @staticmethod
    def _decode_cursor(cursor: str, size: int) -> builtins.list[Any]:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            values = json.loads(raw)
            if not isinstance(values, list) or len(values) != size:
                raise ValueError("wrong shape")
            return [datetime.fromisoformat(v["dt"]) if isinstance(v, dict) else v for v in values]
        except (ValueError, TypeError, KeyError, binascii.Error):
            raise ValidationError(
                f"invalid page cursor {cursor!r}: pass a next_cursor returned by page()",
                field="after",
            ) from None
