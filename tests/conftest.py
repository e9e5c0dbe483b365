"""Fixtures: real databases only.

Every test that takes ``db`` runs once per engine. SQLite: a copy of a file
migrated once per run (the schema is built by the migrations, never by
``create_all``). PostgreSQL: a database created for this run (and xdist
worker), migrated once, put back to its migrated state before each test
and dropped at the end. Both are the pytest plugin's ways
(``orchestrator_db.testing``), which the suite shares.

``ORCHESTRATOR_TEST_ENGINES`` selects engines: ``sqlite``, ``sqlite-inline``
(SQLite with ``sqlite_execution="inline"``), ``postgresql``, ``pgbouncer``
(PostgreSQL through a real PgBouncer, started by the tests), a comma-separated
list, or ``auto`` (the default: all four, PostgreSQL when reachable and
PgBouncer when it can run, each loudly reported when not). Tests
that open their own ``Database`` pass it ``database_options``.
Naming ``postgresql`` explicitly makes an unreachable server an error rather
than a skip.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator_db import Database
from orchestrator_db.testing.database import copy_sqlite, migrate
from orchestrator_db.testing.fixtures import PostgresSuiteDatabase
from tests import pg
from tests.support import (
    ENGINE_OPTIONS,
    engine_url,
    is_sqlite,
    pgbouncer_skipped,
    postgres_skipped,
    selected_engines,
)

ENGINES = selected_engines()


def pytest_report_header() -> str:
    return f"orchestrator_db engines: {', '.join(ENGINES)}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if postgres_skipped():
        terminalreporter.write_sep(
            "!", "PostgreSQL tests were SKIPPED: the server was not reachable", red=True
        )
    why = pgbouncer_skipped()
    if why:
        terminalreporter.write_sep("!", f"PgBouncer tests were SKIPPED: {why}", red=True)


def _worker_id(request: pytest.FixtureRequest) -> str:
    return str(getattr(request.config, "workerinput", {}).get("workerid", "main"))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once per run."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    asyncio.run(migrate(f"sqlite+aiosqlite:///{path}"))
    return path


def _suite(name: str) -> Iterator[PostgresSuiteDatabase]:
    """A PostgreSQL database of this run (and xdist worker), migrated once,
    put back to its migrated state before each test that asks for it (the
    pytest plugin's way: ``orchestrator_db.testing``), dropped at the end."""
    suite = PostgresSuiteDatabase(pg.ADMIN_DSN, lambda url: asyncio.run(migrate(url)), name=name)
    try:
        yield suite
    finally:
        suite.close()


@pytest.fixture(scope="session")
def postgres_suite(request: pytest.FixtureRequest) -> Iterator[PostgresSuiteDatabase]:
    yield from _suite(f"odb_test_{os.getpid()}_{_worker_id(request)}")


@pytest.fixture(scope="session")
def second_postgres_suite(request: pytest.FixtureRequest) -> Iterator[PostgresSuiteDatabase]:
    """Another one, for tests that need two engines' databases at once."""
    yield from _suite(f"odb_test2_{os.getpid()}_{_worker_id(request)}")


def sqlite_copy(template: Path, directory: Path) -> str:
    return copy_sqlite(template, directory / "test.db")


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """The engine a test runs on; parametrizes every test that uses ``db``."""
    return str(request.param)


def _emptied_postgres_url(request: pytest.FixtureRequest, fixture: str = "postgres_suite") -> str:
    suite: PostgresSuiteDatabase = request.getfixturevalue(fixture)
    url, _ = suite.for_test(request.getfixturevalue("tmp_path"))  # restored: nothing to remove
    return url


@pytest.fixture
def database_url(engine: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL to an empty, migrated database of ``engine``."""
    if is_sqlite(engine):
        return sqlite_copy(request.getfixturevalue("sqlite_template"), tmp_path)
    return engine_url(engine, _emptied_postgres_url(request))


@pytest.fixture
def database_options(engine: str) -> dict[str, Any]:
    """The ``Database`` settings of ``engine``."""
    return dict(ENGINE_OPTIONS[engine])


@pytest.fixture
def postgres_database_url(request: pytest.FixtureRequest) -> str:
    """An empty, migrated PostgreSQL database, for PostgreSQL-only behaviour."""
    if "postgresql" not in ENGINES and "pgbouncer" not in ENGINES:
        pytest.skip("PostgreSQL is not among the selected engines")
    return _emptied_postgres_url(request)


@pytest.fixture
def pgbouncer_database_url(request: pytest.FixtureRequest) -> str:
    """An empty, migrated PostgreSQL database (not ``postgres_database_url``'s)
    reached through PgBouncer."""
    if "pgbouncer" not in ENGINES:
        pytest.skip("PgBouncer is not among the selected engines")
    return engine_url("pgbouncer", _emptied_postgres_url(request, "second_postgres_suite"))


@pytest.fixture
async def own_db(
    engine: str, database_url: str, database_options: dict[str, Any], tmp_path: Path
) -> AsyncIterator[Database]:
    """A migrated database of ``engine`` that no other test shares, for
    tests that change its schema (downgrade it, drop an index)."""
    if is_sqlite(engine):  # a copy of its own already
        db = Database(database_url, **database_options)
        yield db
        await db.close()
        return
    name = f"odb_own_{os.getpid()}_{tmp_path.name[-12:].replace('-', '_').lower()}"
    url = await asyncio.to_thread(pg.create_database, name)
    db = Database(engine_url(engine, url), **database_options)
    try:
        await db.migrate()
        yield db
    finally:
        await db.close()
        await asyncio.to_thread(pg.drop_database, name)


@pytest.fixture
async def db(database_url: str, database_options: dict[str, Any]) -> AsyncIterator[Database]:
    database = Database(database_url, **database_options)
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
def sqlite_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated SQLite database, for tests of SQLite-specific behaviour."""
    return sqlite_copy(request.getfixturevalue("sqlite_template"), tmp_path)


@pytest.fixture
async def sqlite_db(sqlite_url: str) -> AsyncIterator[Database]:
    database = Database(sqlite_url)
    try:
        yield database
    finally:
        await database.close()
