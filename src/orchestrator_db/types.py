"""Column types that behave the same on SQLite and PostgreSQL.

* :class:`UTCDateTime` - timezone-aware UTC datetimes with millisecond
  precision. PostgreSQL stores ``timestamptz``; SQLite stores fixed-width
  RFC 3339 text (``2026-11-22T10:15:30.123Z``), exactly what the ``updated_at``
  triggers write, so Python-written and trigger-written values compare and sort
  as text. Naive datetimes are rejected.
* :class:`UUIDString` - UUIDs seen from Python as canonical lowercase strings;
  native ``uuid`` on PostgreSQL, 36-character text on SQLite.
* :class:`JSONDocument` - a dict or a list; ``JSONB`` on PostgreSQL.
* :func:`utc_now_sql` - the database's clock in the same format, usable as a
  server default; it compiles per dialect, so a revision that renders it stays
  valid on both engines.
* :class:`UUIDSet` and :class:`in_uuid_set` - any number of ids bound as
  one parameter.

Milliseconds, not microseconds: SQLite's clock has millisecond resolution, and
values must be identical whichever engine wrote them, so Python-side values are
truncated to the millisecond as well.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Enum, String, bindparam
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.exc import CompileError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator, TypeEngine

from orchestrator_db import values
from orchestrator_db.errors import ValidationError

#: The text format of timestamps on SQLite (``strftime`` spelling).
SQLITE_TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%fZ"
#: The SQLite expression for "now" in that format.
SQLITE_NOW = f"strftime('{SQLITE_TIMESTAMP_FORMAT}', 'now')"
#: The PostgreSQL expression for "now" at the same precision. The wall clock,
#: not the transaction start, so it agrees with Python-side defaults written
#: later in the same transaction.
POSTGRESQL_NOW = "date_trunc('milliseconds', clock_timestamp())"

_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def truncate_to_millis(value: datetime) -> datetime:
    """Return ``value`` in UTC, truncated to the millisecond; reject naive
    values and instants the engines cannot both store (see :mod:`.values`)."""
    return values.instant(value)


def utc_now() -> datetime:
    """The current time as the package stores it: aware UTC, milliseconds."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond - now.microsecond % 1000)


def format_sqlite_timestamp(value: datetime) -> str:
    """Format an aware UTC, millisecond-truncated datetime as SQLite stores it."""
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}T"
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}."
        f"{value.microsecond // 1000:03d}Z"
    )


def parse_sqlite_timestamp(text: str) -> datetime:
    """Parse stored text back into an aware UTC datetime.

    Lenient on purpose: rows written by hand with ``datetime('now')`` (no zone,
    space separator) are read as UTC rather than breaking every query.
    """
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value if value.tzinfo is UTC else value.astimezone(UTC)


def instant_of(value: datetime) -> datetime:
    """An aware datetime read back, in UTC."""
    return value if value.tzinfo is UTC else value.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetime, millisecond precision, identical on both engines."""

    impl = String(24)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.TIMESTAMP(timezone=True))
        return dialect.type_descriptor(String(24))

    def validate(self, value: Any, field: str | None = None) -> datetime:
        return values.instant(value, field)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        value = values.instant(value)
        if dialect.name == "postgresql":
            return value
        return format_sqlite_timestamp(value)

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        # Bulk inserts stamp thousands of rows with the same instant;
        # remembering the last conversion saves most of the per-row cost.
        inner = self.impl_instance.bind_processor(dialect)
        if dialect.name == "postgresql":
            inner = None
        convert = self.process_bind_param
        last: list[tuple[Any, Any]] = [(None, None)]

        def process(value: Any) -> Any:
            if value is None:
                return None
            previous = last[0]
            if previous[0] == value:
                return previous[1]
            result = convert(value, dialect)
            if inner is not None:
                result = inner(result)
            last[0] = (value, result)
            return result

        return process

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            return parse_sqlite_timestamp(value)
        assert isinstance(value, datetime)
        return value if value.tzinfo is UTC else value.astimezone(UTC)

    def result_processor(self, dialect: Dialect, coltype: Any) -> Callable[[Any], Any] | None:
        # process_result_value in one call per value (the decorator's own
        # processor adds a second): every row read passes here, most of its
        # instants NULL. Neither driver needs the impl's processor.
        if dialect.name == "postgresql":

            def instant(value: Any) -> Any:
                if value is None or value.tzinfo is UTC:
                    return value
                return value.astimezone(UTC)

            return instant

        def parsed(value: Any) -> Any:
            if value is None:
                return None
            return parse_sqlite_timestamp(value) if isinstance(value, str) else instant_of(value)

        return parsed

    @property
    def python_type(self) -> type[datetime]:
        return datetime


def canonical_uuid(value: object, *, field: str = "id") -> str:
    """Return ``value`` as a canonical lowercase UUID string or raise ValidationError."""
    if isinstance(value, str) and _CANONICAL_UUID.fullmatch(value):
        return value
    if isinstance(value, uuid.UUID):
        return str(value)
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise ValidationError(f"{field} must be a UUID, got {value!r}", field=field) from None


# new_id()'s state: the millisecond of the last id and its counter.
_COUNTER_BITS = 42
_last_millisecond = -1
_counter = 0


def _fresh_counter() -> int:
    # Random, with the top bit clear so a millisecond has at least 2**41 ids
    # left before it overflows into the next one.
    return int.from_bytes(os.urandom(6), "big") >> (48 - _COUNTER_BITS + 1)


def new_id() -> str:
    """A fresh time-ordered (version 7, RFC 9562) UUID string; the default of
    UUID primary keys.

    Within one process, ids minted later sort later, also within one
    millisecond (across processes, only the millisecond orders them): the 42 bits
    after the timestamp are a counter (RFC 9562 method 1), seeded at random
    each millisecond, and a clock that steps back keeps counting from the
    last millisecond. So rows created in the same millisecond, which share
    ``created_at``, still order by creation when sorted on ``(created_at,
    id)`` - the queue's claim order and ``page()``'s key. The last 32 bits
    are random: two threads racing for one counter value still get distinct
    ids. On PostgreSQL the ordered keys also land at the right-hand end of
    the primary-key index instead of all over it.
    """
    global _last_millisecond, _counter
    millisecond = time.time_ns() // 1_000_000
    if millisecond > _last_millisecond:
        _last_millisecond, _counter = millisecond, _fresh_counter()
    else:
        _counter += 1
        if _counter >> _COUNTER_BITS:
            _last_millisecond, _counter = _last_millisecond + 1, _fresh_counter()
    value = (
        _last_millisecond << 80
        | 0x7 << 76  # version
        | (_counter >> 30) << 64
        | 0b10 << 62  # variant
        | (_counter & 0x3FFF_FFFF) << 32
        | int.from_bytes(os.urandom(4), "big")
    )
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class UUIDString(TypeDecorator[str]):
    """A UUID held as a canonical string in Python; native ``uuid`` on PostgreSQL."""

    impl = String(36)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.UUID(as_uuid=False))
        return dialect.type_descriptor(String(36))

    def validate(self, value: Any, field: str | None = None) -> str:
        return canonical_uuid(value, field=field or "id")

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return canonical_uuid(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else str(value)

    def result_processor(self, dialect: Dialect, coltype: Any) -> Callable[[Any], Any] | None:
        # Rows hold the canonical text already: SQLite's as stored, and
        # PostgreSQL's as its UUID type gives it back (as_uuid=False); no
        # second conversion per value.
        return self.impl_instance.result_processor(dialect, coltype)

    @property
    def python_type(self) -> type[str]:
        return str


class UUIDSet(TypeDecorator[Collection[str]]):
    """Any number of UUIDs bound as one parameter: a ``uuid[]`` on
    PostgreSQL, a JSON array on SQLite. Tested with :class:`in_uuid_set`,
    where an expanding ``IN`` would bind one parameter per id and meet the
    engines' limits on arguments."""

    impl = String()
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.ARRAY(postgresql.UUID(as_uuid=False)))
        return dialect.type_descriptor(String())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        ids = sorted({canonical_uuid(item) for item in value})
        return ids if dialect.name == "postgresql" else json.dumps(ids)


class in_uuid_set(FunctionElement[Any]):
    """``column`` is one of the UUIDs bound as parameter ``name``
    (a :class:`UUIDSet`): ``= ANY(...)`` on PostgreSQL, ``IN`` the rows of
    ``json_each(...)`` on SQLite. Untyped, like :class:`likely`."""

    inherit_cache = True
    name = "in_uuid_set"

    def __init__(self, column: Any, name: str) -> None:
        super().__init__(column, bindparam(name, type_=UUIDSet()))


@compiles(in_uuid_set, "sqlite")
def _in_uuid_set_sqlite(element: in_uuid_set, compiler: SQLCompiler, **kw: Any) -> str:
    column, ids = (compiler.process(clause, **kw) for clause in element.clauses)
    # Compiled fragments only: the ids are a bound parameter.
    return f"{column} IN (SELECT value FROM json_each({ids}))"  # noqa: S608


@compiles(in_uuid_set, "postgresql")
def _in_uuid_set_postgresql(element: in_uuid_set, compiler: SQLCompiler, **kw: Any) -> str:
    column, ids = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"{column} = ANY({ids})"


class JSONByUUID(TypeDecorator[Mapping[str, Any]]):
    """JSON values keyed by UUID, any number of them bound as one parameter:
    a JSON object whose members hold each value's JSON text, serialised as
    a :class:`JSONValue` column would store it (a key whose value is
    ``None`` is left out: SQL NULL). Read per row with :class:`json_for_uuid`.
    The values are checked before they are bound (``values.json_value``)."""

    impl = String()
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        # JSONB on PostgreSQL: parsed once as the parameter arrives. Bound as
        # text and cast, it would be parsed again for every row of a generic
        # plan (which a prepared statement gets after a few executions).
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.JSONB())
        return dialect.type_descriptor(String())

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        # The serialisation found once per dialect, not per batch.
        serialize = _json_text(dialect)
        inner = self.impl_instance.bind_processor(dialect)  # JSONB's encoding
        as_object = dialect.name == "postgresql"

        def process(value: Any) -> Any:
            if value is None:
                return None
            texts = {
                canonical_uuid(key): serialize(item)
                for key, item in value.items()
                if item is not None
            }
            bound = texts if as_object else json.dumps(texts)
            return bound if inner is None else inner(bound)

        return process


def _json_text(dialect: Dialect) -> Callable[[Any], str]:
    """How a :class:`JSONValue` column serialises a value on ``dialect``."""
    process = JSONValue().dialect_impl(dialect).bind_processor(dialect)

    def text(value: Any) -> str:
        serialized = value if process is None else process(value)
        return serialized if isinstance(serialized, str) else json.dumps(serialized)

    return text


class json_for_uuid(FunctionElement[Any]):
    """The value of a :class:`JSONByUUID` parameter ``name`` under the key
    ``column`` (a UUID column), as a JSON column takes it; NULL where the
    key is missing."""

    inherit_cache = True
    name = "json_for_uuid"

    def __init__(self, name: str, column: Any) -> None:
        super().__init__(bindparam(name, type_=JSONByUUID()), column)


@compiles(json_for_uuid, "sqlite")
def _json_for_uuid_sqlite(element: json_for_uuid, compiler: SQLCompiler, **kw: Any) -> str:
    batch, column = (compiler.process(clause, **kw) for clause in element.clauses)
    # The key is the row's column, quoted as a JSON path label: no value is
    # formatted into the SQL.
    return f"json_extract({batch}, '$.\"' || {column} || '\"')"


@compiles(json_for_uuid, "postgresql")
def _json_for_uuid_postgresql(element: json_for_uuid, compiler: SQLCompiler, **kw: Any) -> str:
    batch, column = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"CAST({batch} ->> CAST({column} AS TEXT) AS JSONB)"


class JSONValue(TypeDecorator[Any]):
    """Any JSON value (object, array, string, number, boolean); ``JSONB`` on
    PostgreSQL. ``None`` is stored as SQL NULL, never as the JSON ``null``.
    In-place mutation of a loaded value is not tracked; assign a new value."""

    impl = JSON
    cache_ok = True

    def __init__(self) -> None:
        super().__init__(none_as_null=True)

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.JSONB(none_as_null=True))
        return dialect.type_descriptor(JSON(none_as_null=True))

    def coerce_compared_value(self, op: Any, value: Any) -> TypeEngine[Any]:
        return self.impl_instance.coerce_compared_value(op, value)

    #: Only a ``dict`` or a ``list`` (see :class:`JSONDocument`).
    document = False

    def validate(self, value: Any, field: str | None = None) -> Any:
        return values.json_value(value, field, document=self.document)

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        # The check, then the JSON type's own serialisation: written out, as
        # bulk inserts run it for every row.
        serialize = self.impl_instance.bind_processor(dialect)
        check = values.json_value
        document = self.document

        def process(value: Any) -> Any:
            if value is None:
                return None
            check(value, None, document=document)
            return value if serialize is None else serialize(value)

        return process

    @property
    def python_type(self) -> type[Any]:
        return object


class JSONDocument(JSONValue):
    """A JSON object or array (``dict`` or ``list``). Scalars are rejected:
    configuration, arguments and definitions are documents."""

    cache_ok = True
    document = True


class utc_now_sql(FunctionElement[datetime]):
    """The database's current UTC time, formatted like :class:`UTCDateTime` values."""

    type = UTCDateTime()
    inherit_cache = True
    name = "utc_now"


@compiles(utc_now_sql, "sqlite")
def _utc_now_sqlite(element: utc_now_sql, compiler: SQLCompiler, **kw: Any) -> str:
    return SQLITE_NOW


@compiles(utc_now_sql, "postgresql")
def _utc_now_postgresql(element: utc_now_sql, compiler: SQLCompiler, **kw: Any) -> str:
    return POSTGRESQL_NOW


class utc_statement_time(FunctionElement[datetime]):
    """When the statement started, by the database's clock (UTC, formatted
    like :class:`UTCDateTime` values). Unlike :class:`utc_now_sql`, a
    constant of the statement, so that PostgreSQL can compare an indexed
    column with it in an index scan (``clock_timestamp()`` is volatile: it
    can only filter rows already read). For conditions such as "whose
    lease has run out", which a few milliseconds do not change."""

    type = UTCDateTime()
    inherit_cache = True
    name = "utc_statement_time"


@compiles(utc_statement_time, "sqlite")
def _utc_statement_time_sqlite(
    element: utc_statement_time, compiler: SQLCompiler, **kw: Any
) -> str:
    return SQLITE_NOW  # 'now' is one value throughout a statement


@compiles(utc_statement_time, "postgresql")
def _utc_statement_time_postgresql(
    element: utc_statement_time, compiler: SQLCompiler, **kw: Any
) -> str:
    return "date_trunc('milliseconds', statement_timestamp())"


class utc_now_plus(FunctionElement[datetime]):
    """The database's current UTC time plus ``seconds`` (a SQL expression,
    normally a bound parameter), formatted like :class:`UTCDateTime` values.

    Leases and back-offs are computed with the database's clock: with several
    machines sharing a PostgreSQL server there is one clock, not one per
    worker, and a value is taken when the statement runs, not before it
    waited for a lock.
    """

    type = UTCDateTime()
    inherit_cache = True
    name = "utc_now_plus"


@compiles(utc_now_plus, "sqlite")
def _utc_now_plus_sqlite(element: utc_now_plus, compiler: SQLCompiler, **kw: Any) -> str:
    (seconds,) = element.clauses
    offset = compiler.process(seconds, **kw)
    return f"strftime('{SQLITE_TIMESTAMP_FORMAT}', 'now', printf('%+.3f seconds', {offset}))"


@compiles(utc_now_plus, "postgresql")
def _utc_now_plus_postgresql(element: utc_now_plus, compiler: SQLCompiler, **kw: Any) -> str:
    (seconds,) = element.clauses
    offset = compiler.process(seconds, **kw)
    return f"date_trunc('milliseconds', clock_timestamp() + make_interval(secs => {offset}))"


class utc_plus(FunctionElement[datetime]):
    """A stored instant (a :class:`UTCDateTime` column) plus ``seconds`` (a
    SQL expression), formatted like :class:`UTCDateTime` values: the end of
    a task's timeout, say (``started_at`` plus ``timeout_seconds``)."""

    type = UTCDateTime()
    inherit_cache = True
    name = "utc_plus"


@compiles(utc_plus, "sqlite")
def _utc_plus_sqlite(element: utc_plus, compiler: SQLCompiler, **kw: Any) -> str:
    instant, seconds = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"strftime('{SQLITE_TIMESTAMP_FORMAT}', {instant}, printf('%+.3f seconds', {seconds}))"


@compiles(utc_plus, "postgresql")
def _utc_plus_postgresql(element: utc_plus, compiler: SQLCompiler, **kw: Any) -> str:
    instant, seconds = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"date_trunc('milliseconds', {instant} + make_interval(secs => {seconds}))"


class code_point_order(FunctionElement[Any]):
    """A text expression that sorts and compares by code point on both
    engines: SQLite's default (BINARY, on UTF-8), and ``COLLATE "C"`` on
    PostgreSQL, whose default collation follows the server's locale (where
    ``'B' < 'a'`` may or may not hold). Orders of text keys use it, so that a
    listing and its pages come in the same order on every engine."""

    inherit_cache = True
    name = "code_point_order"

    @property
    def type(self) -> Any:  # type: ignore[override]
        (expression,) = self.clauses
        return expression.type


@compiles(code_point_order, "sqlite")
def _code_point_order_sqlite(element: code_point_order, compiler: SQLCompiler, **kw: Any) -> str:
    (expression,) = element.clauses
    return compiler.process(expression, **kw)


@compiles(code_point_order, "postgresql")
def _code_point_order_postgresql(
    element: code_point_order, compiler: SQLCompiler, **kw: Any
) -> str:
    (expression,) = element.clauses
    return f'{compiler.process(expression, **kw)} COLLATE "C"'


class likely(FunctionElement[Any]):
    """A condition the planner should take as true of most rows: SQLite's
    ``likely()``, which without statistics keeps it from picking an index
    on a column the condition names when another index serves the query
    better (a partial index whose predicate this condition repeats, say);
    the condition itself on PostgreSQL, whose planner has statistics.

    Untyped on purpose: a BOOLEAN expression in a WHERE clause would be
    compared with 1 on SQLite, and the comparison hides the condition from
    the partial index's predicate."""

    inherit_cache = True
    name = "likely"


@compiles(likely, "sqlite")
def _likely_sqlite(element: likely, compiler: SQLCompiler, **kw: Any) -> str:
    (condition,) = element.clauses
    return f"likely({compiler.process(condition, **kw)})"


@compiles(likely, "postgresql")
def _likely_postgresql(element: likely, compiler: SQLCompiler, **kw: Any) -> str:
    (condition,) = element.clauses
    return f"({compiler.process(condition, **kw)})"


def sorted_as_text(expression: Any) -> Any:
    """``expression`` itself, or wrapped in :class:`code_point_order` when
    it is text (a UUID, a number or a timestamp sorts alike everywhere)."""
    kind = getattr(expression, "type", None)
    if isinstance(kind, String) and not isinstance(kind, Enum):
        return code_point_order(expression)
    return expression


@compiles(utc_now_sql)
@compiles(utc_statement_time)
@compiles(likely)
@compiles(utc_now_plus)
@compiles(utc_plus)
@compiles(code_point_order)
@compiles(in_uuid_set)
def _utc_now_unsupported(element: FunctionElement[Any], compiler: SQLCompiler, **kw: Any) -> str:
    raise CompileError(
        f"orchestrator_db supports sqlite and postgresql, not {compiler.dialect.name}"
    )
