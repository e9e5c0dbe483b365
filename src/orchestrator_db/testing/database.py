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
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool
from sqlalchemy.sql import sqltypes

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


def _json_nulls_stay_null(table: Table) -> None:
    """Reflected JSON columns would write Python ``None`` back as JSON
    ``null``; a seed row's SQL NULL must stay one."""
    for column in table.columns:
        if isinstance(column.type, sqltypes.JSON):
            column.type = type(column.type)(none_as_null=True)


# Where a restore of the current schema's tables would not be faithful:
# tables or sequences in another schema, partitioned or inherited tables.
_ELSEWHERE = text(
    "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "  WHERE c.relkind IN ('r', 'p', 'S') AND n.nspname <> current_schema() "
    "  AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "  AND n.nspname NOT LIKE 'pg\\_%') "
    "OR EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "  WHERE n.nspname = current_schema() AND (c.relkind = 'p' OR c.relispartition)) "
    "OR EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
    "  JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema())"
)
# Triggers of the schema's own that a DELETE or an INSERT fires.
_WRITE_TRIGGERS = text(
    "SELECT EXISTS (SELECT 1 FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
    "  JOIN pg_namespace n ON n.oid = c.relnamespace "
    "  WHERE NOT t.tgisinternal AND n.nspname = current_schema() AND (t.tgtype & 12) <> 0)"
)
_QUIET = text("SET LOCAL session_replication_role = replica")
_LOCK_TIMEOUT = text("SET LOCAL lock_timeout = '2s'")
_END_OTHER_SESSIONS = text(
    "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
)


@dataclass(frozen=True)
class Baseline:
    """What a migrated PostgreSQL database holds right after its migrations
    (:meth:`capture`): the rows they wrote, if any (seed data), and where
    each sequence stands. :meth:`restore` puts the database back there
    before a test, in one transaction, over one connection kept for the
    purpose (use it from one event loop): every table is emptied, the seed
    rows are written again and the sequences set back. Where the role may
    (a superuser's may), triggers and foreign-key checks are off meanwhile
    (``session_replication_role = replica``), so that no trigger of the
    project's runs and seed rows may come back in any order; else only a
    database without seed rows and without INSERT or DELETE triggers is
    restored. ``possible`` is false where a restore would not be faithful
    (see also tables in other schemas, partitions, inheritance): copy the
    database instead; ``why`` says why."""

    engine: AsyncEngine
    tables: tuple[Table, ...]  # children first
    rows: tuple[tuple[Table, tuple[dict[str, Any], ...]], ...]  # parents first
    sequences: tuple[tuple[int, int, bool], ...]  # (oid, value, is_called)
    quiet: bool  # session_replication_role = replica is allowed
    why: str | None  # why a restore is not possible, if it is not

    @property
    def possible(self) -> bool:
        return self.why is None

    @classmethod
    async def capture(cls, url: str) -> Baseline:
        metadata = MetaData()
        # One connection, kept; pinged before each use, so that a server
        # restarted meanwhile costs a reconnect, not a failed test.
        engine = create_async_engine(
            normalize_url(url), pool_size=1, max_overflow=0, pool_pre_ping=True
        )
        async with engine.connect() as connection:
            with warnings.catch_warnings(record=True) as cycles:
                # Types SQLAlchemy does not know (point, PostGIS) come back
                # as written; foreign keys in a cycle are noted below.
                warnings.simplefilter("always")
                await connection.run_sync(metadata.reflect)
                ordered = [t for t in metadata.sorted_tables if not _is_version_table(t)]
            cyclic = any("cycle" in str(warning.message) for warning in cycles)
            rows = []
            for table in ordered:
                _json_nulls_stay_null(table)
                result = await connection.execute(select(table))
                found = tuple(dict(row) for row in result.mappings())
                if found:
                    rows.append((table, found))
            sequences = tuple(
                (oid, value, called) for oid, value, called in await connection.execute(_SEQUENCES)
            )
            elsewhere = bool(await connection.scalar(_ELSEWHERE))
            triggers = bool(await connection.scalar(_WRITE_TRIGGERS))
            await connection.rollback()  # the reads' transaction
            try:
                async with connection.begin():
                    await connection.execute(_QUIET)
                quiet = True
            except DBAPIError:  # not a superuser's role
                quiet = False
        why = None
        if elsewhere:
            why = "tables in other schemas, partitioned or inherited tables"
        elif not all(_insertable(table) for table, _ in rows):
            why = "seed rows in generated columns"
        elif not quiet and (rows or triggers or cyclic):
            why = "seed rows, triggers or cyclic foreign keys, and no right to turn triggers off"
        if why is not None:
            await engine.dispose()  # a template may not have connections
        return cls(engine, tuple(reversed(ordered)), tuple(rows), sequences, quiet, why)

    async def restore(self) -> None:
        try:
            await self._restore()
        except DBAPIError:
            # Most likely a lock that a session the last test left open
            # still holds (lock_timeout): end every other session, again.
            async with self.engine.connect() as connection:
                await connection.execute(_END_OTHER_SESSIONS)
            await self._restore()

    async def _restore(self) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(_LOCK_TIMEOUT)
            if self.quiet:
                await connection.execute(_QUIET)
            for table in self.tables:
                await connection.execute(delete(table))
            for table, found in self.rows:
                await connection.execute(insert(table), list(found))
            for oid, value, called in self.sequences:
                where = {"oid": oid, "value": value, "called": called}
                await connection.execute(_SET_SEQUENCE, where)

    async def close(self) -> None:
        await self.engine.dispose()
