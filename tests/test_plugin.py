"""The pytest plugin, as a user's suite meets it: a test directory of its
own run by pytest in a subprocess, the plugin found through its entry
point, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import re

import asyncpg
import pytest

from tests import pg
from tests.conftest import ENGINES
from tests.support import ROOT
from tests.test_project import alembic, make_project

pytest_plugins = ["pytester"]

PLUGIN_DATABASE = re.compile(r"odb_test_\d+_[0-9a-f]{6}(_\d+)?")  # and copies

PLUGIN_ENGINES = [
    pytest.param("sqlite"),
    pytest.param(
        "postgresql",
        marks=pytest.mark.skipif(
            "postgresql" not in ENGINES, reason="PostgreSQL is not among the engines"
        ),
    ),
]

INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
"""

# Two tests that each see a database of their own, empty but migrated.
ISOLATED = """
from orchestrator_db import Database
from orchestrator_db.models import Ticket
from orchestrator_db.testing import create


async def test_one(odb_uow, odb_database: Database, odb_engine: str) -> None:
    ticket = await create(odb_uow, Ticket, title="first")
    await odb_uow.commit()
    async with odb_database.unit_of_work(read_only=True) as uow:
        assert (await uow.tickets.get(ticket.ticket_id)).title == "first"
        assert await uow.worker_types.missing(ticket.project_id, ["coder"]) == []
    print("ENGINE", odb_engine, odb_database.url.get_backend_name(), odb_database.url.database)


async def test_two(odb_uow) -> None:
    assert await odb_uow.tickets.count() == 0
    assert await odb_uow.projects.count() == 0


def test_a_url_for_code_that_opens_its_own(odb_database_url: str) -> None:
    assert odb_database_url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://"))
"""


def _run(pytester: pytest.Pytester, engine: str, *args: str) -> pytest.RunResult:
    pytester.makeini(INI)
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-s", "--odb-engine", engine,
        "--odb-postgres-url", pg.ADMIN_DSN, *args,
    )  # fmt: skip


def _plugin_databases() -> set[str]:
    """The databases the plugin makes (``odb_test_<pid>``, and copies)."""

    async def names() -> set[str]:
        connection = await asyncpg.connect(pg.ADMIN_DSN)
        try:
            rows = await connection.fetch("SELECT datname FROM pg_database")
        finally:
            await connection.close()
        return {
            r["datname"]
            for r in rows
            if re.fullmatch(r"odb_test_\d+_[0-9a-f]{6}(_\d+)?", r["datname"])
        }

    return asyncio.run(names())


@pytest.mark.parametrize("engine", PLUGIN_ENGINES)
def test_each_test_gets_a_migrated_database_of_its_own(
    pytester: pytest.Pytester, engine: str
) -> None:
    pytester.makepyfile(test_user=ISOLATED)
    result = _run(pytester, engine)
    result.assert_outcomes(passed=3)
    backend = "sqlite" if engine == "sqlite" else "postgresql"
    found = re.search(rf"ENGINE {engine} {backend} (\S+)", result.stdout.str())
    assert found, result.stdout.str()
    if engine == "postgresql":
        name = found.group(1)
        assert PLUGIN_DATABASE.fullmatch(name), name
        assert name not in _plugin_databases()  # dropped at the end


def test_an_unknown_engine_is_a_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(test_user="def test_engine(odb_engine):\n    print('ENGINE', odb_engine)\n")
    monkeypatch.setenv("ORCHESTRATOR_DB_TEST_ENGINE", "oracle")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: $ORCHESTRATOR_DB_TEST_ENGINE is 'oracle', not one of*"])
    assert "Traceback" not in result.stderr.str()


def test_postgresql_without_a_server_is_a_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ORCHESTRATOR_DB_TEST_POSTGRES_URL", raising=False)
    pytester.makeini(INI)
    pytester.makepyfile(test_user="def test_nothing():\n    assert True\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--odb-engine", "postgresql")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --odb-engine postgresql needs a server*"])


SEEDED_CONFTEST = """
import asyncio

import pytest

from orchestrator_db import Database
from orchestrator_db.models import Configuration, Event
from orchestrator_db.testing import create


@pytest.fixture(scope="session")
def odb_migrate(odb_migrate):
    def migrate(url):
        odb_migrate(url)

        async def seed():
            db = Database(url)
            async with db.unit_of_work() as uow:
                await create(uow, Configuration, key="greeting", value="hello")
                await create(uow, Event)
                await uow.commit()
            await db.close()

        asyncio.run(seed())

    return migrate
"""

SEEDED = """
import pytest

from orchestrator_db.models import Event
from orchestrator_db.testing import create


@pytest.mark.parametrize("round", range(3))
async def test_the_seed_rows_are_back_each_time(odb_uow, round: int) -> None:
    assert (await odb_uow.configurations.get("greeting")).value == "hello"
    assert await odb_uow.events.count() == 1
    event = await create(odb_uow, Event)
    assert event.id == 2  # the sequence is back where the migrations left it
    await odb_uow.configurations.delete("greeting")
    await odb_uow.commit()
"""


@pytest.mark.parametrize("engine", PLUGIN_ENGINES)
def test_rows_the_migrations_write_are_there_for_every_test(
    pytester: pytest.Pytester, engine: str
) -> None:
    pytester.makeconftest(SEEDED_CONFTEST)
    pytester.makepyfile(test_user=SEEDED)
    _run(pytester, engine).assert_outcomes(passed=3)


def readme_files() -> dict[str, str]:
    """The README's blocks that name a file (```python conftest.py)."""
    readme = (ROOT / "README.md").read_text()
    return dict(re.findall(r"```(?:python|toml) (\S+)\n(.*?)```", readme, re.DOTALL))


@pytest.mark.parametrize("engine", PLUGIN_ENGINES)
def test_the_readme_recipe_with_a_projects_own_revisions(
    pytester: pytest.Pytester, engine: str
) -> None:
    """The README's conftest.py, test file and pytest settings, as written,
    in a project made by ``init-alembic`` with a table of its own."""
    project = make_project(pytester.path)
    alembic(project, f"sqlite:///{project / 'scratch.db'}", "revision", "--autogenerate", "-m", "d")
    files = readme_files()
    assert sorted(files) == ["conftest.py", "pyproject.toml", "test_deployments.py"]
    for name, content in files.items():
        (project / name).write_text(content)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--odb-engine", engine, "--odb-postgres-url", pg.ADMIN_DSN
    )
    result.assert_outcomes(passed=3)


OTHER_SCHEMA_CONFTEST = """
import asyncio

import asyncpg
import pytest


@pytest.fixture(scope="session")
def odb_migrate(odb_migrate):
    def migrate(url):
        odb_migrate(url)

        async def notes():
            connection = await asyncpg.connect(url.replace("+asyncpg", ""))
            await connection.execute("CREATE SCHEMA app; CREATE TABLE app.notes (line text)")
            await connection.close()

        asyncio.run(notes())

    return migrate
"""

OTHER_SCHEMA = """
import pytest
from sqlalchemy import text


@pytest.mark.parametrize("round", range(2))
async def test_a_table_in_another_schema_starts_empty(odb_uow, round: int) -> None:
    count = text("SELECT count(*) FROM app.notes")
    assert (await odb_uow.session.execute(count)).scalar() == 0
    await odb_uow.session.execute(text("INSERT INTO app.notes VALUES ('kept?')"))
    await odb_uow.commit()
"""


@pytest.mark.skipif("postgresql" not in ENGINES, reason="PostgreSQL is not among the engines")
def test_what_a_restore_cannot_keep_gets_a_copy_per_test(pytester: pytest.Pytester) -> None:
    """A table in another schema: each test gets a CREATE DATABASE copy."""
    pytester.makeconftest(OTHER_SCHEMA_CONFTEST)
    pytester.makepyfile(test_user=OTHER_SCHEMA)
    _run(pytester, "postgresql").assert_outcomes(passed=2)


def test_a_url_with_a_password_is_shown_without_it(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(
        test_user="def test_shown(odb_database_url):\n    assert odb_database_url and False\n"
    )
    url = pg.ADMIN_DSN.replace("postgres@", "postgres:s3cr3t@", 1)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--odb-engine", "postgresql", "--odb-postgres-url", url
    )
    result.assert_outcomes(failed=1)
    assert "s3cr3t" not in result.stdout.str() + result.stderr.str()
    bad = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--odb-engine", "postgresql",
        "--odb-postgres-url", "mysql://user:s3cr3t@host/db",
    )  # fmt: skip
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    assert "s3cr3t" not in bad.stdout.str() + bad.stderr.str()
