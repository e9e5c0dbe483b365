"""Statements compiled once per dialect, for the direct path.

SQLAlchemy's execute path costs more than many of the statements it runs: a
greenlet hop, the DBAPI adapter's bookkeeping and a Core result add ~100 us
to a primary-key read that PostgreSQL answers in ~120 us over loopback, and
~120 us to a queue statement SQLite runs in ~50 us. For the statements on
the hot paths (``get`` by primary key, the queue's claim and completion),
the executor hands the SQL SQLAlchemy compiled for the dialect to the driver
itself (see :meth:`.executor.Executor.rows`), converting values with the
columns' own bind and result processors, so what is sent and what comes back
are exactly what SQLAlchemy would have sent and returned.

A statement whose SQL SQLAlchemy rewrites per execution (an expanding
``IN``) is not compiled here: it goes SQLAlchemy's way.
"""

from __future__ import annotations

import collections
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Float
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.expression import Executable

from orchestrator_db import values
from orchestrator_db._execution.backend import Fetch
from orchestrator_db._execution.errors import VALUE_ERRORS
from orchestrator_db.errors import DataLayerError, ValidationError

Processor = Callable[[Any], Any]

K = TypeVar("K")
V = TypeVar("V")


class LRU(Generic[K, V]):
    """A cache of at most ``size`` entries, the least recently used dropped
    first: what is built once per statement or per shape of a call."""

    __slots__ = ("_entries", "size")

    def __init__(self, size: int) -> None:
        self._entries: collections.OrderedDict[K, V] = collections.OrderedDict()
        self.size = size

    def get(self, key: K, build: Callable[[], V]) -> V:
        """The entry of ``key``, built by ``build()`` if it is not kept."""
        entries = self._entries
        try:
            value = entries[key]
        except KeyError:
            value = entries[key] = build()
            if len(entries) > self.size:
                entries.popitem(last=False)
            return value
        entries.move_to_end(key)
        return value

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True)
class DirectStatement:
    """A statement compiled for one dialect, with its value conversions."""

    sql: str
    names: tuple[str, ...]  # bind names, in the driver's positional order
    binds: tuple[tuple[int, Processor], ...]  # the arguments that need converting
    defaults: Mapping[str, Any]  # values bound in the statement itself
    results: tuple[tuple[int, Processor], ...]  # the result columns that need converting
    row_type: Any  # a named tuple of the result columns, like SQLAlchemy's Row

    async def rows(self, fetch: Fetch, params: Mapping[str, Any] | None) -> list[Any]:
        values = {**self.defaults, **params} if params else self.defaults
        try:
            arguments = [values[name] for name in self.names]
            for position, process in self.binds:
                arguments[position] = process(arguments[position])
        except DataLayerError:
            raise
        except VALUE_ERRORS as error:
            # A value the column types refuse: nothing was sent.
            raise ValidationError(f"value rejected: {error}") from error
        records = await fetch(self.sql, arguments)
        rows = []
        for record in records:
            row = list(record)
            for position, process in self.results:
                row[position] = process(row[position])
            rows.append(self.row_type._make(row))
        return rows


_compiled: weakref.WeakKeyDictionary[Dialect, LRU[Executable, DirectStatement | None]] = (
    weakref.WeakKeyDictionary()
)


#: Statements are cached by identity: the repositories build theirs once, and
#: the shapes of listings and counts once per shape (which callers choose). A
#: caller building a new statement per call gets it compiled per call; the
#: least recently used are dropped first, so the hot ones stay.
CACHE_SIZE = 1024


def compiled(statement: Executable, dialect: Dialect) -> DirectStatement | None:
    """``statement`` compiled for ``dialect`` (once per engine), or ``None``
    if it must go through SQLAlchemy."""
    per_dialect = _compiled.get(dialect)
    if per_dialect is None:
        per_dialect = _compiled[dialect] = LRU(CACHE_SIZE)
    return per_dialect.get(statement, lambda: _compile(statement, dialect))


def _then(first: Processor, second: Processor) -> Processor:
    return lambda value: second(first(value))


def _result_processor(kind: Any, dialect: Dialect) -> Any:
    """A column type's result processor, asked without the driver's type
    code (unknown before the first row). asyncpg returns floats for a float
    column (and its float type would demand the type code)."""
    implementation = kind.dialect_impl(dialect)
    if isinstance(implementation, Float) and not implementation.asdecimal:
        # SQLite hands back a whole REAL computed by a statement (RETURNING
        # an expression's value) as an int.
        return _as_float if dialect.name == "sqlite" else None
    return implementation.result_processor(dialect, None)


def _as_float(value: Any) -> Any:
    return value if value is None else float(value)


def _compile(statement: Any, dialect: Dialect) -> DirectStatement | None:
    compiled = statement.compile(dialect=dialect)
    if compiled.post_compile_params or compiled.literal_execute_params:
        return None  # rewritten per execution (expanding IN): SQLAlchemy's job
    names = tuple(compiled.positiontup or ())
    binds = []
    for position, name in enumerate(names):
        kind = compiled.binds[name].type
        process = kind.dialect_impl(dialect).bind_processor(dialect)
        # The package's own column types check their values as they convert
        # them; the others are checked here, as everywhere (see values). A
        # value the statement binds itself needs no check.
        given = compiled.binds[name].required
        check = None if hasattr(kind, "validate") or not given else values.for_type(kind, name)
        if check is not None:
            process = check if process is None else _then(check, process)
        if process is not None:
            binds.append((position, process))
    defaults = {
        name: bind.effective_value for name, bind in compiled.binds.items() if not bind.required
    }
    columns = list(statement.exported_columns)
    results = []
    for position, column in enumerate(columns):
        process = _result_processor(column.type, dialect)
        if process is not None:
            results.append((position, process))
    row_type = collections.namedtuple(  # type: ignore[misc]
        "DirectRow", [column.key or f"column_{i}" for i, column in enumerate(columns)], rename=True
    )
    return DirectStatement(compiled.string, names, tuple(binds), defaults, tuple(results), row_type)
