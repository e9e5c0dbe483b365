"""The error boundary's corners: streamed results and the session's
connection, secrets in constraint errors, concurrent statements of one unit,
reconnection, and the calls that used to slip through untyped."""

from __future__ import annotations

import asyncio
import traceback
from pathlib import Path
from typing import Any, cast

import asyncpg
import pytest
from sqlalchemy import select, text, update

from orchestrator_db import Configuration, Database, Project, Task, WorkerType
from orchestrator_db.errors import (
    CheckViolationError,
    DatabaseConfigurationError,
    DatabaseUnavailableError,
    DataLayerError,
    ForeignKeyViolationError,
    NotNullViolationError,
    TransactionAbortedError,
    ValidationError,
)
from orchestrator_db.repositories.task import TaskRepository
from orchestrator_db.types import new_id
from tests import pg
from tests.helpers import add_tasks, task

SECRET = "s3cr3t-in-a-failing-row"


def told(error: BaseException) -> str:
    return "".join(traceback.format_exception(error)) + repr(error)


async def test_a_failing_stream_fails_the_unit_typed(postgres_database_url: str) -> None:
    db = Database(postgres_database_url)
    try:
        await add_tasks(db, task(title="kept out"))
        async with db.unit_of_work() as uow:
            await uow.tasks.add(task(title="first half"))
            failing = text("SELECT 1 / (300 - x) FROM generate_series(1, 500) AS x")
            result = await uow.session.stream(failing, execution_options={"yield_per": 10})
            with pytest.raises(ValidationError, match="division by zero"):
                async for _ in result:
                    pass
            with pytest.raises(TransactionAbortedError):
                await uow.commit()
        async with db.unit_of_work(read_only=True) as uow:
            assert [t.title for t in await uow.tasks.list()] == ["kept out"]
    finally:
        await db.close()


async def test_the_sessions_connection_keeps_to_the_boundary(db: Database) -> None:
    async with db.unit_of_work() as uow:
        await uow.tasks.add(task(title="first half"))
        connection = await uow.session.connection()
        assert (await connection.execute(select(Task.title))).scalar_one() == "first half"
        with pytest.raises(DataLayerError):
            await connection.execute(text("SELECT * FROM no_such_table"))
        with pytest.raises(TransactionAbortedError):
            await uow.commit()
    async with db.unit_of_work(read_only=True) as uow:
        assert await uow.tasks.count() == 0


async def test_a_not_null_error_never_carries_the_row(db: Database) -> None:
    """PostgreSQL's DETAIL lists the failing row, a secret value included."""
    entry = Configuration(key="k", value=SECRET, value_type=None, is_secret=True)
    with pytest.raises(NotNullViolationError) as failed:
        async with db.unit_of_work() as uow:
            await uow.configurations.add(entry)
    assert SECRET not in told(failed.value)


async def test_a_check_error_never_carries_the_row(db: Database) -> None:
    async with db.unit_of_work() as uow:
        await uow.configurations.set("k", "public")
        await uow.commit()
    refused = text("UPDATE configurations SET value = :v, value_type = 'nonsense' WHERE key = 'k'")
    with pytest.raises(CheckViolationError) as failed:
        async with db.unit_of_work() as uow:
            await uow.session.execute(refused, {"v": SECRET})
    assert SECRET not in told(failed.value)


async def test_statements_awaited_together_take_turns(db: Database) -> None:
    tasks = await add_tasks(db, task(), task(), task())
    for read_only in (True, False):
        async with db.unit_of_work(read_only=read_only) as uow:
            got = await asyncio.gather(
                *(uow.tasks.get(t.id) for t in tasks), uow.tasks.count(), uow.tasks.list(limit=2)
            )
            assert [cast(Task, g).id for g in got[:3]] == [t.id for t in tasks]
            assert got[3] == 3
            assert uow.failure is None
    assert db.pool_status().checked_out == 0


async def test_a_unit_open_already_cannot_be_entered_again(db: Database) -> None:
    uow = db.unit_of_work()
    async with uow:
        with pytest.raises(ValidationError, match="open already"):
            async with uow:
                pass
    async with uow:  # once closed, it may be used again
        assert await uow.tasks.count() == 0


async def test_statements_of_the_caller_are_checked_as_the_packages(db: Database) -> None:
    (added,) = await add_tasks(db, task())
    async with db.unit_of_work() as uow:
        with pytest.raises(ValidationError, match="priority must be an integer"):
            await uow.session.execute(select(Task).where(Task.priority == "x"))
        with pytest.raises(ValidationError, match="NUL"):
            await uow.session.execute(update(Task).values(description="a\x00"))
        with pytest.raises(ValidationError, match="A value is required"):
            await uow.session.execute(text("SELECT :x"))
        with pytest.raises(ValidationError, match="not mapped"):
            uow.session.add(1)
        assert uow.failure is None  # nothing was sent
        assert (await uow.tasks.get(added.id)).id == added.id


async def test_composite_unique_text_fits_postgresql_on_both_engines(db: Database) -> None:
    emoji = "🚀" * 300  # 1,200 UTF-8 bytes, twice in one index entry
    async with db.unit_of_work() as uow:
        await uow.projects.add(Project(repository_name=emoji, path="/p"))
        await uow.worker_types.add(
            WorkerType(project_id=emoji, worker_type=emoji, system_prompt="s")
        )
        with pytest.raises(ValidationError, match="longer than 300"):
            await uow.worker_types.add(
                WorkerType(project_id=emoji, worker_type="x" * 301, system_prompt="s")
            )
        await uow.commit()


async def test_text_keys_sort_by_code_point_whatever_the_collation(
    postgres_database_url: str,
) -> None:
    """A server whose default collation is ICU's English sorts 'a' before 'B';
    listings sort by code point, as on SQLite."""
    name = "odb_icu_collation"
    admin = await asyncpg.connect(pg.ADMIN_DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(
            f'CREATE DATABASE "{name}" TEMPLATE template0 LOCALE_PROVIDER icu '
            "ICU_LOCALE 'en' LOCALE 'C.UTF-8'"
        )
    except asyncpg.PostgresError as error:  # a server built without ICU
        pytest.skip(f"no ICU collation here: {error}")
    finally:
        await admin.close()
    db = Database(pg.url_for(name))
    names = ["b", "B", "a", "A", "_x", "a-b", "ab"]
    try:
        await db.migrate()
        async with db.unit_of_work() as uow:
            await uow.projects.add_many([Project(repository_name=n, path="/") for n in names])
            await uow.commit()
        async with db.unit_of_work(read_only=True) as uow:
            assert [p.repository_name for p in await uow.projects.list()] == sorted(names)
            first = await uow.projects.page(limit=4)
            rest = await uow.projects.page(limit=4, after=first.next_cursor)
            paged = [p.repository_name for p in first.items + rest.items]
            assert paged == sorted(names)
    finally:
        await db.close()
        admin = await asyncpg.connect(pg.ADMIN_DSN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def test_a_foreign_key_is_named_only_when_it_is_certain(db: Database) -> None:
    (existing,) = await add_tasks(db, task())
    with pytest.raises(ForeignKeyViolationError) as one:
        async with db.unit_of_work() as uow:
            await uow.tasks.add(task(parent_task_id=new_id(), session_id=None))
    assert one.value.constraint == "fk_tasks_parent_task_id_tasks"
    with pytest.raises(ForeignKeyViolationError) as other:
        async with db.unit_of_work() as uow:
            await uow.tasks.add(task(parent_task_id=existing.id, session_id=new_id()))
    assert other.value.constraint == "fk_tasks_session_id_sessions"


async def test_a_worker_reconnects_after_a_failed_reconnection(
    postgres_database_url: str,
) -> None:
    db = Database(postgres_database_url)
    unreachable = Database("postgresql+asyncpg://postgres@127.0.0.1:1/test")
    try:
        await add_tasks(db, task(), task())
        async with db.unit_of_work() as uow:
            await uow.tasks.submit_many([task(), task()])
            await uow.commit()
        async with db.queue_worker("w") as worker:
            assert await worker.claim() is not None
            worker._recycle = 0  # the next operation exchanges the connection
            engine, worker._engine = worker._engine, unreachable.engine  # and cannot
            with pytest.raises(DatabaseUnavailableError):
                await worker.claim()
            worker._engine = engine  # the server is back
            assert await worker.claim() is not None
    finally:
        await db.close()
        await unreachable.close()


@pytest.mark.parametrize(
    "call",
    [
        lambda: TaskRepository.backoff("x"),  # type: ignore[arg-type]
        lambda: TaskRepository.backoff(1.5),  # type: ignore[arg-type]
    ],
)
def test_static_helpers_refuse_bad_arguments_typed(call: Any) -> None:
    with pytest.raises(ValidationError):
        call()


@pytest.mark.parametrize("revision", ["@@", "head-1000", "base+99", "a:b", "nope"])
async def test_any_malformed_revision_is_a_validation_error(db: Database, revision: str) -> None:
    with pytest.raises(ValidationError, match="alembic refused"):
        await db.migrate(revision)
    with pytest.raises(ValidationError, match="alembic refused"):
        await db.downgrade(revision)


@pytest.mark.parametrize(
    "path", ["/etc/passwd/x.db", "/nonexistent/x.db", "/tmp/" + "x" * 300 + ".db"]
)
async def test_an_unusable_sqlite_path_is_a_configuration_error(path: str) -> None:
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        with pytest.raises(DatabaseConfigurationError):
            async with db.unit_of_work():
                pass
    finally:
        await db.close()


@pytest.mark.parametrize(
    "options",
    [
        {"bogus": 1},
        {"poolclass": 5},
        {"pool_size": "x"},
        {"execution_options": 5},
    ],
)
def test_refused_engine_options_are_validation_errors(options: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as refused:
        Database("postgresql+asyncpg://u@localhost/db", extra_engine_options=options)
    assert refused.value.field == "extra_engine_options"


async def test_settings_win_over_the_same_extra_options(tmp_path: Path) -> None:
    db = Database(
        f"sqlite+aiosqlite:///{tmp_path / 'x.db'}",
        pool_timeout=1,
        extra_engine_options={"pool_timeout": 100, "echo": True},
    )
    try:
        assert db.engine.sync_engine.pool.timeout() == 1  # type: ignore[attr-defined]
        assert db.engine.echo is False
    finally:
        await db.close()
