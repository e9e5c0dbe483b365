"""The command line: one line and a non-zero status for every failure,
never a traceback; commands that look never create a database."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from orchestrator_db import Database, __version__
from orchestrator_db.cli import main as cli
from orchestrator_db.cli import parser
from orchestrator_db.migrations.runner import head_revision
from orchestrator_db.settings import sqlite_file
from tests.helpers import add_tasks, task


@pytest.fixture
def url(database_url: str, engine: str) -> str:
    """The test database as the command line is given it (the URL says
    what Database settings would)."""
    return database_url + ("?pgbouncer=true" if engine == "pgbouncer" else "")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed command, as a shell runs it."""
    command = Path(sys.executable).with_name("orchestrator-db")
    return subprocess.run([str(command), *args], capture_output=True, text=True, check=False)


def test_version_and_help() -> None:
    shown = run("--version")
    assert shown.returncode == 0 and shown.stdout.strip() == f"orchestrator-db {__version__}"
    helped = run("--help")
    assert helped.returncode == 0
    assert "``" not in helped.stdout and "examples:" in helped.stdout
    for command in ("migrate", "current", "health", "check", "stats", "requeue", "prune"):
        assert command in helped.stdout
    assert "``" not in parser().format_help()


@pytest.mark.parametrize("command", ["current", "health", "check", "stats", "requeue", "prune"])
def test_looking_never_creates_a_database(tmp_path: Path, command: str) -> None:
    missing = tmp_path / "nowhere.db"
    extra = ["--older-than", "1d"] if command == "prune" else []
    done = run("--url", f"sqlite:///{missing}", command, *extra)
    assert done.returncode == 1
    assert done.stderr.startswith("orchestrator-db: no SQLite database at")
    assert len(done.stderr.splitlines()) == 1
    assert not missing.exists()


def test_a_health_check_that_gives_up_says_so_once(postgres_database_url: str) -> None:
    """A connect abandoned at the timeout fails later inside asyncpg; that
    is no second report on stderr."""
    for _ in range(3):
        done = run("--url", postgres_database_url, "health", "--timeout", "0.001")
        assert done.returncode == 1
        assert "no answer within 0.001 s" in done.stdout
        assert done.stderr == "", done.stderr


def test_failures_are_one_line(tmp_path: Path) -> None:
    database = tmp_path / "app.db"
    assert run("--url", f"sqlite:///{database}", "migrate").returncode == 0
    for args in (["migrate", "nope"], ["downgrade", "@@"], ["migrate", "zzz@head"]):
        done = run("--url", f"sqlite:///{database}", *args)
        assert done.returncode == 1, args
        assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr
    unreachable = run("--url", "postgresql://nobody@127.0.0.1:1/none", "current")
    assert unreachable.returncode == 1 and len(unreachable.stderr.splitlines()) == 1


async def test_current_check_stats_requeue(
    url: str, db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await _cli(url, "current") == 0
    assert capsys.readouterr().out.strip() == head_revision()
    assert await _cli(url, "check") == 0
    (said,) = capsys.readouterr().out.splitlines()  # nothing of Alembic's own
    assert said.startswith("the schema matches the models")
    assert await _cli(url, "stats") == 0
    assert capsys.readouterr().out.strip() == "no tasks"
    await add_tasks(db, task(task_type="code"), task(task_type="docs"))
    assert await _cli(url, "stats") == 0
    out = capsys.readouterr().out
    assert "pending: 2" in out and "code: pending 1" in out and "docs: pending 1" in out
    assert await _cli(url, "requeue") == 0
    assert capsys.readouterr().out.strip() == "0 tasks rescued from expired leases"


async def test_check_names_a_difference(
    own_db: Database, engine: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with own_db.engine.begin() as connection:
        await connection.execute(text("DROP INDEX idx_tasks_deadline"))
    url = own_db.url.render_as_string(hide_password=False)
    assert await _cli(url + ("?pgbouncer=true" if engine == "pgbouncer" else ""), "check") == 1
    error = capsys.readouterr().err
    assert "differs from the models: add_index idx_tasks_deadline" in error
    assert len(error.splitlines()) == 1 and len(error) < 300  # names, not reprs


async def test_check_says_the_database_is_not_at_head(
    own_db: Database, engine: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = own_db.url.render_as_string(hide_password=False)
    url += "?pgbouncer=true" if engine == "pgbouncer" else ""
    await own_db.downgrade("0003")
    assert await _cli(url, "check") == 1
    assert capsys.readouterr().err.strip() == (
        f"orchestrator-db: the schema is at 0003, not at {head_revision()}: "
        "run `await db.migrate()`"
    )
    await own_db.downgrade("base")
    assert await _cli(url, "check") == 1
    assert "has not been migrated" in capsys.readouterr().err


async def _cli(*args: str) -> int:
    """The command line's main() in a thread (it runs its own event loop)."""
    url, *rest = args
    return await asyncio.to_thread(cli, ["--url", url, *rest])


def test_a_memory_database_is_no_file() -> None:
    for url in (
        "sqlite+aiosqlite:///file:scratch?mode=memory&cache=shared&uri=true",
        "sqlite+aiosqlite://",
        "sqlite+aiosqlite:///:memory:",
    ):
        assert sqlite_file(make_url(url)) is None, url
    assert sqlite_file(make_url("sqlite+aiosqlite:///app.db")) == "app.db"
