"""Values checked before they reach SQL, with one verdict for both engines.

SQLite stores almost anything; PostgreSQL refuses some values, and asyncpg
others, each in its own way (or, for the earliest instants, stores
``-infinity`` and then fails every read of the row). So every value bound to
a statement by the package is checked here first, and refused with a
:class:`~orchestrator_db.errors.ValidationError` naming the field, before
anything is sent: a refused value leaves the unit of work as it was.

What each kind of column takes (the README's table of decisions says why):

========================  =================================================
integer column            an ``int`` (not ``bool``), -2**31 .. 2**31-1
text column               a ``str`` without NUL or lone surrogates; in an
                          indexed column, at most ``MAX_INDEXED_TEXT``
                          characters
boolean column            a ``bool``
enumeration column        a member, or its value
timestamp column          an aware ``datetime`` that converts to UTC, from
                          0001-01-01T00:00:00.001Z to 9999-12-31T23:59:59.999Z
                          after truncation to the millisecond
UUID column               a UUID or its text, in any case
JSON column               ``None``, ``bool``, ``int`` (64-bit), finite
                          ``float`` below 1e16 in magnitude, ``str`` (as for
                          text), ``list`` and ``dict`` with ``str`` keys,
                          nested at most ``MAX_JSON_DEPTH`` deep
========================  =================================================

Arguments that are not column values (limits, leases, ages, id lists) have
their own checks below.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import json
import math
import re
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import BigInteger, Boolean, ColumnElement, Enum, Integer, String, UniqueConstraint
from sqlalchemy.sql.type_api import TypeEngine

from orchestrator_db.errors import ValidationError

E = TypeVar("E", bound=enum.Enum)
Validator = Callable[[Any], Any]

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: Text in an indexed column (an index, a unique constraint, a primary key):
#: a PostgreSQL B-tree entry holds about 2,700 bytes, and two such columns of
#: up to four UTF-8 bytes a character must fit in one; SQLite could index
#: more, but both engines must give the same answer.
MAX_INDEXED_TEXT = 300
#: How deep JSON may nest (Python's own encoder gives up near 1,000).
MAX_JSON_DEPTH = 100
#: JSON floats at or above this magnitude come back from PostgreSQL's JSONB
#: as integers (``1e16`` is stored as ``10000000000000000``).
MAX_JSON_FLOAT = 1e16
#: The most values one ``IN`` list may hold: one statement may carry at most
#: 32,767 arguments on PostgreSQL (and 32,766 on SQLite).
MAX_IN_VALUES = 30_000
#: The earliest and latest instants both engines store and read back:
#: asyncpg writes the very first instant of year 1 as ``-infinity``.
MIN_INSTANT = datetime(1, 1, 1, 0, 0, 0, 1000, tzinfo=UTC)
MAX_INSTANT = datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)
#: The longest lease, back-off or timeout the package accepts.
MAX_DURATION = timedelta(days=3650)

_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")


def _refuse(field: str | None, message: str) -> ValidationError:
    return ValidationError(f"{field or 'value'} {message}", field=field)


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ------------------------------------------------------------------ scalars


def text(
    value: Any,
    field: str | None = None,
    *,
    max_length: int | None = None,
    min_length: int = 0,
) -> str:
    """A ``str`` without NUL characters or lone surrogates (neither engine
    can store both: PostgreSQL refuses NUL, UTF-8 has no surrogates)."""
    if not isinstance(value, str):
        raise _refuse(field, f"must be a string, not {type(value).__name__}")
    if len(value) < min_length:
        raise _refuse(field, f"must be at least {min_length} character(s) long")
    bad = _BAD_TEXT.search(value)
    if bad is not None:
        what = "a NUL character" if bad.group() == "\x00" else "a lone surrogate"
        raise _refuse(field, f"contains {what} at position {bad.start()}")
    if max_length is not None and len(value) > max_length:
        raise _refuse(field, f"is longer than {max_length} characters ({len(value)})")
    return value


def integer(
    value: Any, field: str | None = None, *, minimum: int = INT32_MIN, maximum: int = INT32_MAX
) -> int:
    """An ``int`` (not a ``bool``, ``float``, ``Decimal`` or ``str``) in range."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise _refuse(field, f"must be an integer, not {type(value).__name__}")
    if not minimum <= value <= maximum:
        raise _refuse(field, f"must be between {minimum} and {maximum}, not {_describe(value)}")
    return value


def boolean(value: Any, field: str | None = None) -> bool:
    if not isinstance(value, bool):
        raise _refuse(field, f"must be True or False, not {_describe(value)}")
    return value


def member(kind: type[E], value: Any, field: str | None = None) -> E:
    """A member of ``kind``, given as the member or its value."""
    if isinstance(value, kind):
        return value
    try:
        return kind(value)
    except (ValueError, TypeError):
        expected = ", ".join(str(m.value) for m in kind)
        raise _refuse(field, f"must be one of {expected}; got {_describe(value)}") from None


def instant(value: Any, field: str | None = None) -> datetime:
    """An aware datetime both engines store and read back, in UTC, truncated
    to the millisecond (as it will be stored)."""
    if not isinstance(value, datetime):
        raise _refuse(field, f"must be a datetime, not {type(value).__name__}")
    offset = value.utcoffset()
    if value.tzinfo is None or offset is None:
        raise _refuse(
            field,
            f"is a naive datetime ({value.isoformat()}): pass a timezone-aware value "
            "such as datetime.now(timezone.utc)",
        )
    try:
        utc = value if value.tzinfo is UTC else value.astimezone(UTC)
    except OverflowError:
        raise _refuse(field, f"{value.isoformat()} has no UTC equivalent in years 1-9999") from None
    micros = utc.microsecond
    if micros % 1000:
        utc = utc.replace(microsecond=micros - micros % 1000)
    if not MIN_INSTANT <= utc <= MAX_INSTANT:
        raise _refuse(
            field,
            f"{value.isoformat()} is outside {MIN_INSTANT.isoformat()} .. "
            f"{MAX_INSTANT.isoformat()} (UTC, to the millisecond)",
        )
    return utc


def duration(
    value: Any,
    field: str | None = None,
    *,
    minimum: timedelta = timedelta(0),
    maximum: timedelta = MAX_DURATION,
    positive: bool = False,
) -> timedelta:
    """A ``timedelta`` from ``minimum`` to ``maximum`` (above zero if ``positive``)."""
    if not isinstance(value, timedelta):
        raise _refuse(field, f"must be a timedelta, not {type(value).__name__}")
    if positive and value <= timedelta(0):
        raise _refuse(field, "must be positive")
    if not minimum <= value <= maximum:
        raise _refuse(field, f"must be between {minimum} and {maximum}, not {value}")
    return value


def age_or_instant(value: Any, field: str | None = None) -> datetime:
    """The instant ``value`` names: an aware datetime, or an age back from now."""
    if isinstance(value, datetime):
        return instant(value, field)
    age = duration(value, field, maximum=timedelta.max)
    now = datetime.now(UTC)
    if age > now - MIN_INSTANT:
        raise _refuse(field, f"reaches back before {MIN_INSTANT.isoformat()}")
    return instant(now - age, field)


def count(value: Any, field: str, *, minimum: int = 0, maximum: int = INT32_MAX) -> int:
    """A limit, offset or batch size."""
    return integer(value, field, minimum=minimum, maximum=maximum)


# --------------------------------------------------------------------- JSON


def json_value(value: Any, field: str | None = None, *, document: bool = False) -> Any:
    """A JSON value both engines store and give back equal (see the module);
    with ``document``, a ``dict`` or a ``list`` only."""
    if document and not isinstance(value, dict | list):
        raise _refuse(
            field, f"must be a JSON object (dict) or array (list), not {type(value).__name__}"
        )
    _check_json(value, field, 0)
    return value


def _check_json(value: Any, field: str | None, depth: int) -> None:
    # Iterative, scalars checked in place and every string (keys too) scanned
    # in one pass at the end: documents are checked for every row of a bulk
    # insert, so this is written for speed.
    strings: list[str] = []
    add = strings.append
    pending: list[tuple[Any, int]] = [(value, depth)]
    push = pending.append
    while pending:
        item, level = pending.pop()
        kind = type(item)
        if kind is str:
            add(item)
            continue
        if kind is not dict and kind is not list:
            _check_json_scalar(item, kind, field)
            continue
        if level >= MAX_JSON_DEPTH:
            raise _refuse(field, f"nests deeper than {MAX_JSON_DEPTH} levels")
        if kind is dict:
            for key in item:
                if type(key) is not str:
                    raise _refuse(field, f"has a key that is not a string ({type(key).__name__})")
                add(key)
            item = item.values()
        for member in item:
            kind = type(member)
            if kind is str:
                add(member)
            elif kind is dict or kind is list:
                push((member, level + 1))
            else:
                _check_json_scalar(member, kind, field)
    if strings and _BAD_TEXT.search("".join(strings)):
        for string in strings:
            text(string, field)


def _check_json_scalar(value: Any, kind: type, field: str | None) -> None:
    if kind is int:
        if not INT64_MIN <= value <= INT64_MAX:
            raise _refuse(field, "holds an integer beyond 64 bits")
    elif kind is float:
        if not abs(value) < MAX_JSON_FLOAT:  # NaN and infinities fail this too
            if not math.isfinite(value):
                raise _refuse(field, "holds NaN or an infinity, which JSON cannot represent")
            raise _refuse(
                field,
                f"holds a float of {MAX_JSON_FLOAT:g} or more in magnitude, which "
                "PostgreSQL would give back as an integer",
            )
    elif value is not None and kind is not bool:
        raise _refuse(field, f"holds a {kind.__name__}, which is not a JSON value")


# ---------------------------------------------------------------- columns


def for_column(column: ColumnElement[Any]) -> Validator | None:
    """The check of values bound to ``column`` (``None`` passes unchecked:
    the database decides about NULL)."""
    return _for_column(column)


@functools.cache
def _for_column(column: ColumnElement[Any]) -> Validator | None:
    return for_type(column.type, column.key, indexed=_is_indexed(column))


@functools.cache
def _is_indexed(column: ColumnElement[Any]) -> bool:
    table = getattr(column, "table", None)
    unique = [c for c in getattr(table, "constraints", ()) if isinstance(c, UniqueConstraint)]
    groups = [*getattr(table, "indexes", ()), *unique]
    return bool(getattr(column, "primary_key", False)) or any(
        indexed is column for group in groups for indexed in getattr(group, "columns", ())
    )


def for_type(
    kind: TypeEngine[Any], field: str | None, *, indexed: bool = False
) -> Validator | None:
    """The check of values of a column type, or ``None`` if it needs none.

    Each check lets ``None`` through (the database decides about NULL) and
    returns the value as it will be stored. They run for every value bound
    on the hot paths, so each first tries the common case inline.
    """
    check = getattr(kind, "validate", None)
    if check is not None:  # the package's own types know their values

        def own(value: Any) -> Any:
            return None if value is None else check(value, field)

        return own
    if isinstance(kind, Enum) and kind.enum_class is not None:
        members = kind.enum_class

        def one_of(value: Any) -> Any:
            if value is None or type(value) is members:
                return value
            return member(members, value, field)

        return one_of
    if isinstance(kind, Boolean):
        return lambda value: (
            value if value is None or type(value) is bool else boolean(value, field)
        )
    if isinstance(kind, Integer):
        low, high = (
            (INT64_MIN, INT64_MAX) if isinstance(kind, BigInteger) else (INT32_MIN, INT32_MAX)
        )

        def whole(value: Any) -> Any:
            if value is None or (type(value) is int and low <= value <= high):
                return value
            return integer(value, field, minimum=low, maximum=high)

        return whole
    if isinstance(kind, String):
        limit = _text_limit(kind, indexed)
        search = _BAD_TEXT.search

        def string(value: Any) -> Any:
            if value is None or (
                type(value) is str and not search(value) and (limit is None or len(value) <= limit)
            ):
                return value
            return text(value, field, max_length=limit)

        return string
    return None


def check_many(column: ColumnElement[Any], items: list[Any]) -> None:
    """Check many values of ``column`` (a bulk insert's), as :func:`for_column`
    would one by one; text is scanned in one pass."""
    check = for_column(column)
    if check is None:
        return
    present = [item for item in items if item is not None]
    if present and not _all_fine(column, present):
        for item in present:
            check(item)  # raises for the first bad one


def _all_fine(column: ColumnElement[Any], present: list[Any]) -> bool:
    """A quick pass over many values, true when each would pass its check."""
    kind = column.type
    if isinstance(kind, Integer) and not isinstance(kind, BigInteger):
        return all(type(i) is int and INT32_MIN <= i <= INT32_MAX for i in present)
    if isinstance(kind, String) and not isinstance(kind, Enum):
        if not all(type(item) is str for item in present) or _BAD_TEXT.search("".join(present)):
            return False
        limit = _text_limit(kind, _is_indexed(column))
        return limit is None or max(map(len, present), default=0) <= limit
    return False


def _text_limit(kind: String, indexed: bool) -> int | None:
    """The longest text a column takes: its declared length (``String(n)``,
    enforced on SQLite too), and at most :data:`MAX_INDEXED_TEXT` if indexed."""
    limits = [limit for limit in (kind.length, MAX_INDEXED_TEXT if indexed else None) if limit]
    return min(limits) if limits else None


def in_list(values: Collection[Any], field: str | None = None) -> list[Any]:
    """The values of an ``IN`` list, at most :data:`MAX_IN_VALUES` of them."""
    if len(values) > MAX_IN_VALUES:
        raise _refuse(
            field, f"lists {len(values)} values; at most {MAX_IN_VALUES} fit in one statement"
        )
    return list(values)


def column_value(column: ColumnElement[Any], value: Any, field: str | None = None) -> Any:
    """``value`` checked against ``column`` (``field`` names it in errors)."""
    if value is None:
        return None
    check = for_column(column)
    if check is None:
        return value
    if field is None or field == column.key:
        return check(value)
    try:
        return check(value)
    except ValidationError as error:
        message = str(error)
        prefix = f"{column.key} "
        raise ValidationError(
            field + " " + (message[len(prefix) :] if message.startswith(prefix) else message),
            field=field,
        ) from None


def texts(value: Any, field: str | None = None, *, max_length: int | None = None) -> list[str]:
    """A collection of strings (not a string itself), each checked as :func:`text`."""
    if isinstance(value, str | bytes) or not isinstance(value, Collection):
        raise _refuse(field, f"must be a collection of strings, not {type(value).__name__}")
    return [text(item, field, max_length=max_length) for item in in_list(value, field)]


# ----------------------------------------------------------------- cursors

#: The longest page cursor accepted (the package's own are far shorter).
MAX_CURSOR = 4096


def encode_cursor(keyset: Iterable[Any], order: str | None = None) -> str:
    """The page cursor for a row's keyset values; a listing in an order of
    the caller's (``order``) remembers it, so that the cursor cannot be
    reused with another."""
    encoded: Any = [{"dt": v.isoformat()} if isinstance(v, datetime) else v for v in keyset]
    if order is not None:
        encoded = {"order": order, "keys": encoded}
    raw = json.dumps(encoded, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(
    cursor: Any,
    columns: Sequence[ColumnElement[Any]],
    field: str = "after",
    order: str | None = None,
) -> list[Any]:
    """The keyset values of a cursor made by :func:`encode_cursor` for rows of
    ``columns`` in ``order``; anything else (tampered, of another listing or
    order, truncated, nested) is a :class:`ValidationError`."""
    refused = ValidationError(
        "invalid page cursor: pass a next_cursor returned by page() for the same listing",
        field=field,
    )
    if not isinstance(cursor, str) or not cursor or len(cursor) > MAX_CURSOR:
        raise refused
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        decoded = json.loads(raw)
    except (ValueError, RecursionError, binascii.Error):
        raise refused from None
    if isinstance(decoded, dict):
        if set(decoded) != {"order", "keys"} or not isinstance(decoded["order"], str):
            raise refused
        if decoded["order"] != order:
            raise ValidationError(
                f"this page cursor was made for order_by={decoded['order']!r}; "
                "pass the same order_by with it",
                field=field,
            )
        decoded = decoded["keys"]
    elif order is not None:
        raise ValidationError(
            "this page cursor was made for the default order; pass it without order_by",
            field=field,
        )
    if not isinstance(decoded, list) or len(decoded) != len(columns):
        raise refused
    found: list[Any] = []
    for column, item in zip(columns, decoded, strict=True):
        if item is None and order is not None and getattr(column, "nullable", False):
            found.append(None)  # an order of the caller's may hold NULLs
            continue
        if column.type.python_type is float:
            if isinstance(item, bool) or not isinstance(item, int | float):
                raise refused
            try:
                number = float(item)
            except OverflowError:
                raise refused from None
            if not math.isfinite(number):
                raise refused
            found.append(number)
            continue
        if column.type.python_type is datetime:
            if not (isinstance(item, dict) and set(item) == {"dt"} and isinstance(item["dt"], str)):
                raise refused
            try:
                item = datetime.fromisoformat(item["dt"])
            except ValueError:
                raise refused from None
        elif isinstance(item, dict | list) or item is None:
            raise refused
        try:
            found.append(column_value(column, item, field))
        except ValidationError:
            raise refused from None
    return found
