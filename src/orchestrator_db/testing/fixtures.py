"""The fixtures of orchestrator_db's pytest plugin (see
:mod:`orchestrator_db.testing.plugin`).

The suite's database is migrated once per test process; each test gets a
database of its own made from it (a copy of the SQLite file; on PostgreSQL
the same database put back to what its migrations left: see
:mod:`orchestrator_db.testing.database`). Each test commits for real: a
unit of work behaves in a test as it does in production.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_asyncio
from sqlalchemy.engine import make_url

from orchestrator_db.database import Database
from orchestrator_db.testing.database import Baseline, PostgresServer, copy_sqlite, migrate
from orchestrator_db.testing.plugin import chosen_engine, postgres_server
from orchestrator_db.unit_of_work import UnitOfWork

T = TypeVar("T")


class _Loop:
    """An event loop in a thread of its own: the suite's database work
    (copies, restores) keeps its connections from one test to the next."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="orchestrator_db fixtures", daemon=True
        )
        self._thread.start()

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


class SuiteDatabase:
    """The suite's migrated database, and how a test gets one of its own."""

    def __init__(self, engine: str, *, sqlite_file: Path | None = None) -> None:
        self.engine = engine
        self._sqlite_file = sqlite_file
        self._copies = itertools.count(1)

    def for_test(self, directory: Path) -> tuple[str, Callable[[], None]]:
        """A database for one test: its URL, and what removes it."""
        assert self._sqlite_file is not None
        copy = copy_sqlite(self._sqlite_file, directory / "orchestrator_db-test.sqlite")
        return copy, lambda: None

    def close(self) -> None:
        """Drop what the suite made."""


class PostgresSuiteDatabase(SuiteDatabase):
    """Database ``name`` made on the server of ``server_url`` and migrated
    by ``migrate``; each test gets it back as migrated (or a copy of it)."""

    def __init__(
        self, server_url: str, migrate: Callable[[str], None], *, name: str | None = None
    ) -> None:
        super().__init__("postgresql")
        self._server = PostgresServer(server_url)
        # The process id alone can repeat (one per container).
        self._name = name or f"odb_test_{os.getpid()}_{secrets.token_hex(3)}"
        self._loop = _Loop()
        try:
            self.url = self._loop.run(self._server.create(self._name))
            migrate(self.url)
            self._baseline = self._loop.run(Baseline.capture(self.url))
        except BaseException:
            try:
                self._loop.run(self._server.drop(self._name))
            finally:
                self._loop.close()
            raise

    def for_test(self, directory: Path) -> tuple[str, Callable[[], None]]:
        if self._baseline.possible:
            self._loop.run(self._baseline.restore())
            return self.url, lambda: None
        server, copy = self._server, f"{self._name}_{next(self._copies)}"
        url = self._loop.run(server.create(copy, template=self._name))
        return url, lambda: self._loop.run(server.drop(copy))

    def close(self) -> None:
        try:
            self._loop.run(self._baseline.close())
        finally:
            try:
                self._loop.run(self._server.drop(self._name))
            finally:
                self._loop.close()


@pytest.fixture(scope="session")
def odb_engine(pytestconfig: pytest.Config) -> str:
    """``sqlite`` or ``postgresql``: ``--odb-engine``, else
    ``$ORCHESTRATOR_DB_TEST_ENGINE``, else ``sqlite``."""
    return chosen_engine(pytestconfig)


@pytest.fixture(scope="session")
def odb_migrate() -> Callable[[str], None]:
    """Migrates the suite's database (given its URL) once per test process:
    the package's revisions. Override it to apply your project's too::

        @pytest.fixture(scope="session")
        def odb_migrate(odb_migrate):
            def migrate(url):
                odb_migrate(url)
                upgrade("alembic.ini", url)  # orchestrator_db.migrations.project
            return migrate
    """
    return lambda url: asyncio.run(migrate(url))


@pytest.fixture(scope="session")
def odb_suite_database(
    odb_engine: str,
    odb_migrate: Callable[[str], None],
    pytestconfig: pytest.Config,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[SuiteDatabase]:
    """The suite's database, migrated; dropped at the end (PostgreSQL)."""
    if odb_engine == "sqlite":
        path = tmp_path_factory.mktemp("orchestrator_db") / "suite.db"
        odb_migrate(f"sqlite+aiosqlite:///{path}")
        yield SuiteDatabase(odb_engine, sqlite_file=path)
        return
    suite = PostgresSuiteDatabase(postgres_server(pytestconfig), odb_migrate)
    try:
        yield suite
    finally:
        suite.close()


class DatabaseURL(str):
    """A database URL whose repr hides its password: pytest shows a failed
    test's arguments."""

    def __repr__(self) -> str:
        return repr(make_url(self).render_as_string(hide_password=True))


@pytest.fixture
def odb_database_url(odb_suite_database: SuiteDatabase, tmp_path: Path) -> Iterator[str]:
    """The URL of a migrated database of this test's own."""
    url, remove = odb_suite_database.for_test(tmp_path)
    yield DatabaseURL(url)
    remove()


@pytest.fixture
def odb_settings() -> dict[str, Any]:
    """The settings ``odb_database`` is opened with (none: the defaults).
    Override it in a conftest: ``return {"pool_size": 2}``."""
    return {}


@pytest_asyncio.fixture
async def odb_database(
    odb_database_url: str, odb_settings: dict[str, Any]
) -> AsyncIterator[Database]:
    """A migrated :class:`Database` of this test's own, closed after it."""
    db = Database(odb_database_url, **odb_settings)
    try:
        yield db
    finally:
        await db.close()


@pytest_asyncio.fixture
async def odb_uow(odb_database: Database) -> AsyncIterator[UnitOfWork]:
    """A unit of work on ``odb_database``; what the test does not commit is
    rolled back."""
    async with odb_database.unit_of_work() as uow:
        yield uow
