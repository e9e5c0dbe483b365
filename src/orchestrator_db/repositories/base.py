"""The generic repository every concrete repository builds on.

A concrete repository is one line (``model_type = Task``) plus its domain
queries. Repositories flush, never commit: the unit of work owns the
transaction. Their statements run on the unit's executor
(:mod:`orchestrator_db._execution.executor`), whose error boundary turns any
failure into a typed error and fails the unit closed; a repository catches
no error and names no dialect.
"""

from __future__ import annotations

import builtins
import functools
import inspect as inspect_module
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, overload

from sqlalchemy import (
    ClauseElement,
    ColumnElement,
    Integer,
    delete,
    func,
    inspect,
    literal,
    select,
)
from sqlalchemy.orm import InstrumentedAttribute, Mapper
from sqlalchemy.orm.attributes import instance_state

from orchestrator_db import values
from orchestrator_db._execution import bulk
from orchestrator_db._execution.errors import Boundary
from orchestrator_db._execution.rows import (
    maintained_by_trigger,
    mark_detached,
    row_layout,
    updating,
)
from orchestrator_db.errors import NotFoundError, ValidationError
from orchestrator_db.models.base import Base, check_bound_values, check_values
from orchestrator_db.repositories import listing
from orchestrator_db.repositories.ordering import Ordering, ordering
from orchestrator_db.sql import IDS_PER_STATEMENT
from orchestrator_db.types import JSONValue, UUIDString, canonical_uuid

if TYPE_CHECKING:
    from orchestrator_db._execution.executor import UnitExecutor, UnitSession

ModelT = TypeVar("ModelT", bound=Base)
RepositoryT = TypeVar("RepositoryT", bound="Repository[Any]")
Criterion = ColumnElement[bool]
FilterBuilder = Callable[[Any], Criterion]


def cutoff(older_than: timedelta | datetime) -> datetime:
    """The instant ``older_than`` names: an age back from now, or an instant."""
    return values.age_or_instant(older_than, "older_than")


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


#: A condition on a call's arguments: ``(repository class, dialect name,
#: *args, **kwargs) -> bool``.
Condition = Callable[..., bool]
MethodT = TypeVar("MethodT", bound=Callable[..., Awaitable[Any]])


@dataclass(frozen=True)
class Plan:
    """How a repository method runs when called on the ``Database``
    (``await db.tasks.get(id)``): each call is a unit of work of its own
    (see :mod:`orchestrator_db.calls`), of a kind its arguments decide.

    ``reads``: the call only reads, in a read-only unit. ``one_statement``:
    the call sends a single statement, which commits on its own, with no
    BEGIN or COMMIT around it; its objects come back detached, without the
    session's bookkeeping. Otherwise: a write unit, committed as the method
    returns. Undeclared methods are writes: declaring too little costs speed,
    never correctness."""

    reads: bool | Condition = False
    one_statement: bool | Condition = False


_PLAN = "__orchestrator_db_plan__"
_WRITE = Plan()


def plan_of(method: Callable[..., Any]) -> Plan:
    """The :class:`Plan` a method was declared with (a write if none)."""
    plan: Plan = getattr(method, _PLAN, _WRITE)
    return plan


@overload
def reads(method: MethodT) -> MethodT: ...


@overload
def reads(
    *, unless: Condition | None = None, one_statement: bool = False
) -> Callable[[MethodT], MethodT]: ...


def reads(
    method: MethodT | None = None, *, unless: Condition | None = None, one_statement: bool = False
) -> MethodT | Callable[[MethodT], MethodT]:
    """Declare a method a read (see :class:`Plan`); ``unless`` names the
    calls that write after all (``get(..., for_update=True)``). A read may
    send several statements, each seeing what was committed when it ran;
    ``one_statement``: it sends one, and does nothing with its objects but
    return them (they are built detached)."""

    def declare(method: MethodT) -> MethodT:
        condition: bool | Condition = True
        if unless is not None:
            condition = functools.partial(_unless, unless)
        setattr(method, _PLAN, Plan(reads=condition, one_statement=one_statement))
        return method

    return declare if method is None else declare(method)


def _unless(condition: Condition, *args: Any, **kwargs: Any) -> bool:
    return not condition(*args, **kwargs)


def one_statement(when: Condition | None = None) -> Callable[[MethodT], MethodT]:
    """Declare a write that sends exactly one statement, atomic on its own
    (see :class:`Plan`), always or ``when`` its arguments say so. A call
    that finds it needs more after all, having written nothing, says so with
    ``self._ex.needs_transaction()`` and runs again in a write unit; a
    second statement sent regardless is refused (a wrong declaration)."""

    def declare(method: MethodT) -> MethodT:
        setattr(method, _PLAN, Plan(one_statement=True if when is None else when))
        return method

    return declare


def _locks(repository: type[Any], dialect: str, key: Any, *, for_update: bool = False) -> bool:
    return for_update is not False


def _guarded(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """``method`` inside the error boundary: whatever it raises leaves as a
    typed error. (Its statements fail the unit closed on their own; a value
    that breaks the method's own logic is refused without failing it.)"""

    @functools.wraps(method)
    async def guarded(self: Repository[Any], *args: Any, **kwargs: Any) -> Any:
        with Boundary(self._ex.backend, self.entity):
            return await method(self, *args, **kwargs)

    guarded.__wrapped_by_boundary__ = True  # type: ignore[attr-defined]
    return guarded


def _guard_public_methods(cls: type[Any]) -> None:
    for name, member in list(vars(cls).items()):
        if (
            not name.startswith("_")
            and inspect_module.iscoroutinefunction(member)
            and not getattr(member, "__wrapped_by_boundary__", False)
        ):
            setattr(cls, name, _guarded(member))


class Repository(Generic[ModelT]):
    """Typed data access for one model inside a unit of work.

    Subclasses set :attr:`model_type`, and may add keyword filters
    (:attr:`named_filters`), fields ``update`` must not touch (:attr:`protected_fields`)
    and the keyset order of :meth:`page` (:attr:`keyset`). A unit of work
    makes one for its executor: ``uow.repository(MyRepository)``.
    """

    model_type: type[ModelT]
    #: Named filters beyond "column equals value", e.g. ``created_after``.
    named_filters: ClassVar[Mapping[str, FilterBuilder]] = {}
    #: Attributes changed only through domain methods (``update`` refuses them).
    protected_fields: ClassVar[frozenset[str]] = frozenset()
    #: Attributes the package computes (a priority, say): ``add``,
    #: ``add_many`` and ``update`` refuse values for them.
    maintained_fields: ClassVar[frozenset[str]] = frozenset()
    #: Attributes that order :meth:`list` and :meth:`page`; by default
    #: ``created_at`` then the primary key, which must be covered by an index.
    keyset: ClassVar[tuple[str, ...]] = ()

    #: The model's name, as errors name it.
    entity: ClassVar[str] = "row"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        model = getattr(cls, "model_type", None)
        if model is not None:
            cls.entity = model.__name__
        _guard_public_methods(cls)  # a user's repository gets the boundary too

    def __init__(self, executor: UnitExecutor) -> None:
        self._ex = executor

    @property
    def session(self) -> UnitSession:
        """The unit of work's session."""
        return self._ex.session

    @staticmethod
    def _value(attribute: InstrumentedAttribute[Any], value: Any, field: str) -> Any:
        """``value``, required, checked as ``attribute``'s column takes it."""
        if value is None:
            raise ValidationError(f"{field} is required", field=field)
        return values.column_value(attribute.property.columns[0], value, field)

    def _sibling(self, repository: type[RepositoryT]) -> RepositoryT:
        """Another repository of the same unit of work."""
        return repository(self._ex)

    # ------------------------------------------------------------ metadata

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
        """``where`` (SQL criteria, their bound values checked) and ``filters``
        (values checked against their columns) as criteria."""
        criteria = list(where)
        for criterion in criteria:
            check_bound_values(criterion)
        for name, value in filters.items():
            builder = self.named_filters.get(name)
            if builder is not None:
                if value is not None:
                    criteria.append(builder(value))
                continue
            attribute = self._filtered(name)
            column = attribute.property.columns[0]
            if value is None:
                criteria.append(attribute.is_(None))
            elif isinstance(value, list | tuple | set | frozenset):
                items = values.in_list(value, name)
                if any(item is None for item in items):
                    raise ValidationError(
                        f"{name}: None cannot be one of a list of values; filter on "
                        f"{name}=None alone for IS NULL",
                        field=name,
                    )
                criteria.append(attribute.in_([values.column_value(column, v) for v in items]))
            else:
                criteria.append(attribute == values.column_value(column, value))
        return criteria

    def _filtered(self, name: str) -> InstrumentedAttribute[Any]:
        """The attribute a filter ``name`` compares, if it can be compared."""
        attribute = self._attribute(name)
        if isinstance(attribute.property.columns[0].type, JSONValue):
            raise ValidationError(
                f"{self.entity}.{name} holds JSON, which does not compare alike on both "
                "engines; filter on it with a SQL criterion of your own",
                field=name,
            )
        return attribute

    def _plain_filters(self, filters: Mapping[str, Any]) -> dict[str, Any] | None:
        """``filters`` as attribute: value checked (``None``: IS NULL) when
        each is an attribute's value; ``None`` when one is a named filter, a
        list or a SQL expression (see :mod:`.listing`)."""
        checked = {}
        for name, value in filters.items():
            if (
                name in self.named_filters
                or isinstance(value, list | tuple | set | frozenset | ClauseElement)
                or hasattr(value, "__clause_element__")  # an attribute, say
            ):
                return None
            column = self._filtered(name).property.columns[0]
            checked[name] = None if value is None else values.column_value(column, value)
        return checked

    def _primary_key_criteria(self, key: Any) -> builtins.list[Criterion]:
        columns = row_layout(self.model_type).key_columns
        return [
            column == value for column, value in zip(columns, self._key_parts(key), strict=True)
        ]

    def _key_parts(self, key: Any) -> tuple[Any, ...]:
        """The parts of a primary key, each checked against its column."""
        parts = key if isinstance(key, tuple) else (key,)
        layout = row_layout(self.model_type)
        if len(parts) != len(layout.key_columns):
            raise ValidationError(
                f"{self.entity} key has {len(layout.key_columns)} part(s), got {key!r}",
                field="key",
            )
        if None in parts:
            raise ValidationError(f"{self.entity} key has no value for a part", field="key")
        return tuple([check(part) for check, part in zip(layout.key_checks, parts, strict=True)])

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
        generated = self._database_generates_keys()
        for column in mapper.primary_key:
            key = mapper.get_property_by_column(column).key
            if generated and state_dict.get(key) is not None:
                # A key given by hand would not advance PostgreSQL's sequence,
                # and a later row would collide with it: SQLite would not.
                raise ValidationError(
                    f"{self.entity}.{key} is assigned by the database; leave it unset",
                    field=key,
                )
            default = column.default
            if state_dict.get(key) is None and default is not None and default.is_callable:
                setattr(obj, key, default.arg(bulk.DefaultContext(state_dict)))
        for prop in mapper.column_attrs:
            value = state_dict.get(prop.key)
            if value is not None and isinstance(prop.columns[0].type, UUIDString):
                canonical = canonical_uuid(value, field=prop.key)
                if canonical != value:
                    setattr(obj, prop.key, canonical)

    async def _flush(self, obj: ModelT, key: Any = None) -> None:
        """Flush, naming ``obj``'s row in any error."""
        await self._ex.flush(
            entity=self.entity,
            key=self._key_of(obj) if key is None else key,
            model=self.model_type,
            row=instance_state(obj).dict,
        )

    # ----------------------------------------------------------- commands

    def _refuse_maintained(self, held: Mapping[str, Any]) -> None:
        for name in self.maintained_fields:
            if held.get(name) is not None:
                raise ValidationError(
                    f"{self.entity}.{name} is kept by the package; leave it unset", field=name
                )

    async def add(self, obj: ModelT) -> ModelT:
        """Add ``obj`` and flush it; the database has checked it on return."""
        self._check_instance(obj)
        if not instance_state(obj).persistent:
            self._refuse_maintained(instance_state(obj).dict)
        return await self._add(obj)

    async def _add(self, obj: ModelT) -> ModelT:
        """:meth:`add`, maintained fields and all (the repository set them)."""
        self._prepare(obj)
        held = instance_state(obj).dict
        held.update(check_values(self.model_type, held))
        self.session.add(obj)
        await self._flush(obj)
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
        if self.maintained_fields:
            for item in items:
                self._refuse_maintained(instance_state(item).dict)
        return await self._add_many(items)

    async def _add_many(self, items: builtins.list[ModelT]) -> builtins.list[ModelT]:
        """:meth:`add_many`, maintained fields and all (the repository set them)."""
        if not items:
            return []
        if self._database_generates_keys():
            for item in items:
                self._prepare(item)
                held = instance_state(item).dict
                held.update(check_values(self.model_type, held))
            self.session.add_all(items)
            await self._ex.flush(entity=self.entity)
            return items
        await self._ex.insert_many(self.model_type, [instance_state(obj).dict for obj in items])
        mark_detached(self.model_type, items)
        return items

    @one_statement(when=lambda repository, dialect, key, **values: repository._alone(values))
    async def update(self, key: Any, **values: Any) -> ModelT:
        """Set attributes of the row ``key`` and return it, refreshed: one
        ``UPDATE ... RETURNING``, whose row becomes the unit's object (the one
        it holds already, if it does)."""
        layout = row_layout(self.model_type)
        primary = [layout.keys[position] for position in layout.primary_key]
        for name in values:
            self._attribute(name)
            if name in primary:
                raise ValidationError(f"the primary key of {self.entity} cannot change", field=name)
            if name in self.maintained_fields:
                self._refuse_maintained({name: True})
            if name in self.protected_fields:
                raise ValidationError(
                    f"{self.entity}.{name} is managed by the repository's domain methods; "
                    "it cannot be set with update()",
                    field=name,
                )
        values.update(check_values(self.model_type, values))
        if not values:
            return await self.get(key)
        params = {f"key_{i}": part for i, part in enumerate(self._key_parts(key))}
        params.update({f"set_{name}": value for name, value in values.items()})
        # Changes made directly go first, even with autoflush off: the row
        # that comes back overwrites the object.
        await self._flush_pending()
        statement = updating(self.model_type, frozenset(values))
        rows = await self._ex.rows(statement, params, entity=self.entity, key=key)
        if not rows:
            raise NotFoundError(self.entity, key)
        obj = self._ex.adopt(self.model_type, rows[0], refresh=True)
        given = [c.key for c in maintained_by_trigger(self.model_type) if c.key in values]
        if given:
            # Given the value it had, updated_at is moved by SQLite's trigger
            # after RETURNING has shown it: read what the row keeps.
            await self._ex.refresh(obj, given, entity=self.entity, key=key)
        return obj

    @classmethod
    def _alone(cls, values: Mapping[str, Any]) -> bool:
        """Whether :meth:`update` with ``values`` is its one statement: not
        when it re-reads a trigger-kept column it was given (see there)."""
        return not any(column.key in values for column in maintained_by_trigger(cls.model_type))

    async def _autoflush(self) -> None:
        """Flush what the unit holds unflushed, as the ORM does before a
        query (unless autoflush is off), so that a statement sees it."""
        if self._ex.unflushed(auto=True):
            await self._ex.flush(entity=self.entity)

    async def _flush_pending(self) -> None:
        if self._ex.unflushed():
            await self._ex.flush(entity=self.entity)

    async def _flush_and_refresh(self, obj: ModelT, key: Any) -> None:
        """Flush changes to ``obj`` and reload what triggers changed.

        SQLite's RETURNING shows values as the statement wrote them, not as
        triggers left them, so trigger-maintained columns are re-read.
        """
        await self._flush(obj, key)
        refresh = [
            prop.key
            for prop in self._mapper().column_attrs
            if prop.columns[0].server_onupdate is not None
            and prop.key not in instance_state(obj).dict
        ]
        if refresh:
            await self._ex.refresh(obj, refresh, entity=self.entity, key=key)

    @one_statement()
    async def delete(self, key: Any) -> bool:
        """Delete the row ``key``; ``False`` if there was none.

        Rows that reference it are handled by the database's ON DELETE rules.
        """
        statement = delete(self.model_type).where(*self._primary_key_criteria(key))
        result = await self._ex.execute(statement, entity=self.entity, key=key)
        return bool(getattr(result, "rowcount", 0))

    # ---------------------------------------------------------- retention

    @staticmethod
    def _retention(older_than: timedelta | datetime, limit: int | None = None) -> dict[str, Any]:
        """The parameters of a retention statement, checked."""
        params: dict[str, Any] = {"cutoff": cutoff(older_than)}
        if limit is not None:
            params["limit"] = values.count(limit, "limit", minimum=1, maximum=IDS_PER_STATEMENT)
        return params

    async def _prune_batch(
        self, statement: Any, older_than: timedelta | datetime, limit: int
    ) -> int:
        """Run a retention ``DELETE ... RETURNING``; how many rows it deleted."""
        params = self._retention(older_than, limit)
        return len(await self._ex.rows(statement, params, entity=self.entity))

    async def _prunable(self, statement: Any, older_than: timedelta | datetime) -> int:
        """Run a retention count."""
        rows = await self._ex.rows(statement, self._retention(older_than), entity=self.entity)
        return int(rows[0][0])

    # ------------------------------------------------------------ queries

    @reads(unless=_locks, one_statement=True)
    async def get(self, key: Any, *, for_update: bool = False) -> ModelT:
        """The row ``key``; :class:`NotFoundError` if it does not exist.

        ``for_update`` locks the row until the unit of work ends (PostgreSQL;
        SQLite write units of work hold the database write lock already).
        """
        obj = await self._get_or_none(key, for_update)
        if obj is None:
            raise NotFoundError(self.entity, key)
        return obj

    @reads(unless=_locks, one_statement=True)
    async def get_or_none(self, key: Any, *, for_update: bool = False) -> ModelT | None:
        """The row ``key``, or ``None`` if it does not exist (see :meth:`get`)."""
        return await self._get_or_none(key, for_update)

    async def _get_or_none(self, key: Any, for_update: bool) -> ModelT | None:
        if for_update is not True and for_update is not False:
            values.boolean(for_update, "for_update")
        layout = row_layout(self.model_type)
        parts = self._key_parts(key)
        if for_update or self._ex.holds_key(self.model_type, parts):
            # Loaded already (no query at all), or to be locked: the ORM's own get.
            ident = parts[0] if len(parts) == 1 else parts
            return await self._ex.get(self.model_type, ident, for_update=for_update)
        await self._autoflush()  # a pending row is found
        params = {f"key_{i}": part for i, part in enumerate(parts)}
        rows = await self._ex.rows(layout.by_key, params, entity=self.entity, key=key)
        return self._ex.adopt(self.model_type, rows[0], refresh=False) if rows else None

    @reads
    async def list(
        self,
        *where: Criterion,
        limit: int | None = None,
        offset: int = 0,
        order_by: str | Sequence[str] | None = None,
        **filters: Any,
    ) -> builtins.list[ModelT]:
        """Rows matching ``where`` and ``filters``, in keyset order, or in
        ``order_by``'s: attribute names, ``-`` for descending
        (``order_by="-created_at"``), the primary key breaking ties.

        ``filters`` are ``attribute=value`` (``None`` means IS NULL, a list
        means IN) or a named filter of the repository.
        """
        if limit is not None:
            values.count(limit, "limit")
        values.count(offset, "offset")
        order = self._ordering(order_by)
        return await self._listed(where, filters, order, limit, offset, None)

    @reads
    async def page(
        self,
        *where: Criterion,
        limit: int = 50,
        after: str | None = None,
        order_by: str | Sequence[str] | None = None,
        **filters: Any,
    ) -> Page[ModelT]:
        """A page of ``limit`` rows after the cursor ``after`` (keyset
        pagination), in keyset order or in ``order_by``'s (see :meth:`list`).

        Unlike offsets, the cost of a page does not grow with its depth, and
        rows inserted meanwhile never shift a page. A cursor remembers its
        order: it is refused with another.
        """
        values.count(limit, "limit", minimum=1, maximum=values.INT32_MAX - 1)
        order = self._ordering(order_by)
        last = None
        if after is not None:
            last = values.decode_cursor(after, order.columns, order=order.spec)
        rows = await self._listed(where, filters, order, limit + 1, 0, last)
        if len(rows) <= limit:
            return Page(rows, None)
        rows = rows[:limit]
        held = instance_state(rows[-1]).dict
        keys = [held[key.attribute.key] for key in order.keys]
        return Page(rows, values.encode_cursor(keys, order=order.spec))

    async def _listed(
        self,
        where: Sequence[Criterion],
        filters: Mapping[str, Any],
        order: Ordering,
        limit: int | None,
        offset: int,
        after: Sequence[Any] | None,
    ) -> builtins.list[ModelT]:
        """The objects of the rows ``where`` and ``filters`` select, in
        ``order``, after the row whose keys were ``after``; the statement
        built once for the listing's shape where it has one (see
        :mod:`.listing`)."""
        plain = None if where else self._plain_filters(filters)
        if plain is not None:
            request = listing.Request(
                self.model_type, type(self), plain, order, limit, offset, after
            )
            statement, params = listing.shaped(request, self._filtered)
            return await self._ex.scalars(statement, params, entity=self.entity)
        criteria = self._criteria(where, filters)
        if after is not None:
            criteria.append(order.after(after))
        statement = (
            select(self.model_type)
            .where(*criteria)
            .order_by(*order.clauses())
            .offset(offset or None)
            .limit(limit)
        )
        return await self._ex.scalars(statement, entity=self.entity)

    def _ordering(self, order_by: Any) -> Ordering:
        mapper = self._mapper()
        primary = [mapper.get_property_by_column(c).key for c in mapper.primary_key]
        return ordering(order_by, self._keyset_attributes(), primary, self._ordered)

    def _ordered(self, name: str) -> InstrumentedAttribute[Any]:
        attrs = self._mapper().column_attrs
        if name in attrs and isinstance(attrs[name].columns[0].type, JSONValue):
            raise ValidationError(
                f"{self.entity} cannot be ordered by {name!r}: a JSON column has no order",
                field="order_by",
            )
        if name not in attrs:
            raise ValidationError(
                f"{self.entity} cannot be ordered by {name!r}: not one of its attributes",
                field="order_by",
            )
        return self._attribute(name)

    @reads(one_statement=True)
    async def count(self, *where: Criterion, **filters: Any) -> int:
        tally = await self._tally(where, filters, exists=False)
        if tally is not None:
            return int(tally[0][0])
        statement = (
            select(func.count()).select_from(self.model_type).where(*self._criteria(where, filters))
        )
        return int((await self._ex.execute(statement, entity=self.entity)).scalar_one())

    @reads(one_statement=True)
    async def exists(self, *where: Criterion, **filters: Any) -> bool:
        tally = await self._tally(where, filters, exists=True)
        if tally is not None:
            return bool(tally)
        statement = (
            select(literal(1))
            .select_from(self.model_type)
            .where(*self._criteria(where, filters))
            .limit(1)
        )
        return (await self._ex.execute(statement, entity=self.entity)).first() is not None

    async def _tally(
        self, where: Sequence[Criterion], filters: Mapping[str, Any], *, exists: bool
    ) -> builtins.list[Any] | None:
        """The rows of the statement of ``count()`` (or ``exists()``) built
        once for the filters' shape (see :mod:`.listing`); ``None`` when they
        have none."""
        plain = None if where else self._plain_filters(filters)
        if plain is None or self._ex.query_hooks():
            # A do_orm_execute hook (with_loader_criteria, say) would not see
            # a direct statement: count as list() does, through the session.
            return None
        statement, params = listing.tallied(
            self.model_type, type(self), plain, self._filtered, exists=exists
        )
        await self._autoflush()  # what the unit holds unflushed is counted
        return await self._ex.rows(statement, params, entity=self.entity)

    async def _objects(
        self, statement: Any, params: Mapping[str, Any] | None = None, *, refresh: bool
    ) -> builtins.list[ModelT]:
        """The unit's objects for a statement returning every column of the
        table (``refresh``: the statement just changed the rows)."""
        rows = await self._ex.rows(statement, params, entity=self.entity)
        return [self._ex.adopt(self.model_type, row, refresh=refresh) for row in rows]

    async def _changed(
        self, statement: Any, params: Mapping[str, Any] | None = None
    ) -> builtins.list[Any]:
        """Run an ``UPDATE ... RETURNING <primary key>``; refresh the objects
        of the unit it changed (its values may be SQL, such as the database's
        clock); return their keys."""
        keys = [row[0] for row in await self._ex.rows(statement, params, entity=self.entity)]
        await self._ex.refresh_loaded(self.model_type, keys)
        return keys


_guard_public_methods(Repository)


class Attribute(Generic[RepositoryT]):
    """A repository as an attribute (``uow.tasks``, ``db.tasks``), made on
    first access by its owner's ``repository()`` and kept by the owner."""

    def __init__(self, repository: type[RepositoryT]) -> None:
        self.repository = repository
        self.name = ""

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type[Any]) -> Attribute[RepositoryT]: ...

    @overload
    def __get__(self, instance: object, owner: type[Any]) -> RepositoryT: ...

    def __get__(self, instance: Any, owner: type[Any]) -> Attribute[RepositoryT] | RepositoryT:
        if instance is None:
            return self
        made: RepositoryT = instance.repository(self.repository)
        instance.__dict__[self.name] = made
        return made
