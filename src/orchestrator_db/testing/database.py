"""Throwaway migrated databases for tests of code built on orchestrator_db.

A test suite migrates once, then gives each test a database of its own
made from that one (the pytest plugin, :mod:`orchestrator_db.testing.plugin`,
does this for you):

* SQLite: a copy of the migrated file (:func:`copy_sqlite`).
* PostgreSQL: the migrated database, put back before each test to what
  the migrations left (:class:`Baseline`: emptied, children first, their
  seed rows written again, sequences set back), or, where that cannot be
  done faithfully, a copy of it made with ``CREATE DATABASE ... TEMPLATE``
  (:meth:`PostgresServer.create`).

``bench/fixtures.py`` measures these against the alternatives (a
transaction rolled back, ``TRUNCATE``, migrating per test).
"""

from __future__ import annotations

import re
import shutil
import tempfile
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, Table, delete, insert, select, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from orchestrator_db.database import Database
from orchestrator_db.errors import ValidationError
from orchestrator_db.settings import normalize_url

_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

# The schema's sequences, where they stand.
_SEQUENCES = text(
    "SELECT s.seqrelid::bigint, COALESCE(q.last_value, s.seqstart), q.last_value IS NOT NULL "
    "FROM pg_sequence s "
    "JOIN pg_class c ON c.oid = s.seqrelid "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "JOIN pg_sequences q ON q.schemaname = n.nspname AND q.sequencename = c.relname "
    "WHERE n.nspname = current_schema()"
)
_SET_SEQUENCE = text("SELECT setval(CAST(CAST(:oid AS bigint) AS oid), :value, :called)")


@asynccontextmanager
async def migrated_database(**settings: Any) -> AsyncIterator[Database]:
    """A :class:`Database` on a new SQLite file, migrated to head; deleted on exit."""
    with tempfile.TemporaryDirectory(prefix="orchestrator_db-") as directory:
        db = Database(f"sqlite+aiosqlite:///{Path(directory) / 'test.db'}", **settings)
        try:
            await db.migrate()
            yield db
        finally:
            await db.close()


async def migrate(url: str) -> None:
    """Apply the package's revisions to the database at ``url``, and close it
    (a SQLite file is then whole, its WAL checkpointed, ready to copy)."""
    db = Database(url)
    try:
        await db.migrate()
    finally:
        await db.close()


def copy_sqlite(template: Path, target: Path) -> str:
    """Copy a migrated, closed SQLite file to ``target``; its URL."""
    shutil.copyfile(template, target)
    return f"sqlite+aiosqlite:///{target}"


def _engine(url: str | URL, **options: Any) -> AsyncEngine:
    return create_async_engine(normalize_url(url), poolclass=NullPool, **options)


class PostgresServer:
    """Databases made and dropped on one PostgreSQL server, reached through
    ``url`` (any database of it that the user may connect to)."""

    def __init__(self, url: str) -> None:
        self._url = normalize_url(url)
        if self._url.get_backend_name() != "postgresql":
            raise ValidationError("not a PostgreSQL URL", field="url")
        # Connections are not pooled (NullPool), so one engine serves every
        # event loop: each call connects anew, the dialect is set up once.
        self._engine = _engine(self._url, isolation_level="AUTOCOMMIT")

    def url_of(self, name: str) -> str:
        """The URL of database ``name`` on this server."""
        return self._url.set(database=name).render_as_string(hide_password=False)

    async def _ddl(self, statement: str, **names: str) -> None:
        """Run ``statement`` with ``names`` in it as quoted identifiers
        (plain names only, checked): DDL takes no bound parameters."""
        async with self._engine.connect() as connection:
            quote = connection.dialect.identifier_preparer.quote
            quoted = {key: quote(_checked(name)) for key, name in names.items()}
            await connection.exec_driver_sql(statement.format_map(quoted))

    async def create(self, name: str, *, template: str | None = None) -> str:
        """Create database ``name`` (a copy of ``template``); its URL."""
        await self.drop(name)
        if template is None:
            await self._ddl("CREATE DATABASE {name}", name=name)
        else:
            statement = "CREATE DATABASE {name} TEMPLATE {template}"
            await self._ddl(statement, name=name, template=template)
        return self.url_of(name)

    async def drop(self, name: str) -> None:
        """Drop database ``name`` if it exists, closing its connections."""
        await self._ddl("DROP DATABASE IF EXISTS {name} WITH (FORCE)", name=name)


def _checked(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValidationError(f"{name!r} is not a plain database name", field="name")
    return name


def _is_version_table(table: Table) -> bool:
    return [column.name for column in table.columns] == ["version_num"]


def _insertable(table: Table) -> bool:
    """Whether the rows read from ``table`` can be written back as they were."""
    return not any(
        column.computed is not None or (column.identity is not None and column.identity.always)
        for column in table.columns
    )


@dataclass(frozen=True)
class Baseline:
    """What a migrated PostgreSQL database holds right after its migrations
    (:meth:`capture`): the rows they wrote, if any (seed data), and where
    each sequence stands. :meth:`restore` puts the database back there
    before a test: every table is emptied (children first), the seed rows
    are written again and the sequences set back, in one transaction, over
    one connection kept for the purpose (use it from one event loop).
    ``possible`` is false where that cannot be done faithfully (foreign keys
    in a cycle, seed rows in generated columns): copy the database instead."""

    engine: AsyncEngine
    tables: tuple[Table, ...]  # children first
    rows: tuple[tuple[Table, tuple[dict[str, Any], ...]], ...]  # parents first
    sequences: tuple[tuple[int, int, bool], ...]  # (oid, value, is_called)
    possible: bool

    @classmethod
    async def capture(cls, url: str) -> Baseline:
        metadata = MetaData()
        # One connection, kept; pinged before each use, so that a server
        # restarted meanwhile costs a reconnect, not a failed test.
        engine = create_async_engine(
            normalize_url(url), pool_size=1, max_overflow=0, pool_pre_ping=True
        )
        async with engine.connect() as connection:
            await connection.run_sync(metadata.reflect)
            with warnings.catch_warnings(record=True) as cycles:
                warnings.simplefilter("always")
                ordered = [t for t in metadata.sorted_tables if not _is_version_table(t)]
            rows = []
            for table in ordered:
                result = await connection.execute(select(table))
                found = tuple(dict(row) for row in result.mappings())
                if found:
                    rows.append((table, found))
            sequences = tuple(
                (oid, value, called) for oid, value, called in await connection.execute(_SEQUENCES)
            )
        possible = not cycles and all(_insertable(table) for table, _ in rows)
        return cls(engine, tuple(reversed(ordered)), tuple(rows), sequences, possible)

    async def restore(self) -> None:
        async with self.engine.begin() as connection:
            for table in self.tables:
                await connection.execute(delete(table))
            for table, found in self.rows:
                await connection.execute(insert(table), list(found))
            for oid, value, called in self.sequences:
                where = {"oid": oid, "value": value, "called": called}
                await connection.execute(_SET_SEQUENCE, where)

    async def close(self) -> None:
        await self.engine.dispose()
