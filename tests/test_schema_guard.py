"""A database migrated by a newer version of the package is refused, typed,
everywhere; and the command line reports every error without a traceback."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from sqlalchemy import text

from orchestrator_db import Database
from orchestrator_db.errors import SchemaNotReadyError, UnknownRevisionError, ValidationError
from orchestrator_db.migrations.runner import head_revision
from tests.helpers import add_tasks, task

FUTURE = "9999_from_the_future"


async def stamp(db: Database, revision: str) -> None:
    async with db.engine.begin() as connection:
        await connection.execute(
            text("UPDATE alembic_version SET version_num = :v"), {"v": revision}
        )


async def test_a_database_from_a_newer_version_is_refused_everywhere(
    database_url: str, database_options: dict[str, Any]
) -> None:
    setup = Database(database_url, **database_options)
    await add_tasks(setup, task())
    await stamp(setup, FUTURE)
    await setup.close()

    db = Database(database_url, **database_options)
    try:
        with pytest.raises(UnknownRevisionError) as refused:
            await db.migrate()
        assert refused.value.revision == FUTURE and refused.value.head == head_revision()
        assert isinstance(refused.value, SchemaNotReadyError)
        with pytest.raises(UnknownRevisionError):
            await db.downgrade("base")
        for read_only in (False, True):
            with pytest.raises(UnknownRevisionError):
                async with db.unit_of_work(read_only=read_only) as uow:
                    await uow.tasks.count()
        with pytest.raises(UnknownRevisionError):
            async with db.queue_worker("w"):
                pass
        report = await db.health_check()
        assert not report.ok and report.error is not None and FUTURE in report.error
        assert await db.current_revision() == FUTURE
        # Nothing was dropped: the data is there for the version that knows it.
        async with db.engine.connect() as connection:
            assert (await connection.execute(text("SELECT count(*) FROM tasks"))).scalar() == 1

        await stamp(db, str(head_revision()))
        async with db.unit_of_work(read_only=True) as uow:
            assert await uow.tasks.count() == 1
        assert (await db.health_check()).ok
    finally:
        await db.close()


async def test_an_unknown_target_revision_is_a_validation_error(db: Database) -> None:
    with pytest.raises(ValidationError, match="alembic refused"):
        await db.downgrade("no-such-revision")
    with pytest.raises(ValidationError):
        await db.migrate("")
    assert await db.current_revision() == head_revision()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator_db.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--url", "mysql://x/y", "current"], "unsupported database URL scheme"),
        (["--url", "postgresql://u:hunter2@127.0.0.1:1/x", "current"], "cannot reach"),
        (["downgrade", "no-such-revision"], "alembic refused"),
    ],
)
def test_the_command_line_reports_errors_without_a_traceback(
    sqlite_url: str, args: list[str], says: str
) -> None:
    if "--url" not in args:
        args = ["--url", sqlite_url, *args]
    done = run_cli(*args)
    assert done.returncode == 1
    assert says in done.stderr
    assert "Traceback" not in done.stderr and "hunter2" not in done.stderr
