"""Database: settings, pool behaviour, health, read-only units, in-memory SQLite."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from orchestrator_db import Database, Task
from orchestrator_db.errors import (
    ForeignKeyViolationError,
    PoolTimeoutError,
    ReadOnlyError,
    SchemaNotReadyError,
    ValidationError,
)
from orchestrator_db.migrations.runner import head_revision
from orchestrator_db.types import new_id
from tests.helpers import add_tasks, task


async def test_health_report(db: Database) -> None:
    report = await db.health_check()
    assert report.ok and report.error is None
    assert report.dialect == db.dialect
    assert report.server_version
    assert report.current_revision == report.head_revision == head_revision()
    assert report.up_to_date
    assert report.latency_ms > 0
    assert report.pool.checked_out == 0
    assert report.pool.size == (5 if db.dialect == "sqlite" else 10)


async def test_health_of_an_unreachable_database() -> None:
    db = Database("postgresql+asyncpg://nobody@127.0.0.1:1/none", pool_timeout=2)
    try:
        report = await db.health_check()
    finally:
        await db.close()
    assert not report.ok
    assert report.error
    assert report.current_revision is None


async def test_an_exhausted_pool_raises_instead_of_hanging(
    database_url: str, database_options: dict[str, Any]
) -> None:
    db = Database(database_url, pool_size=1, max_overflow=0, pool_timeout=0.5, **database_options)
    try:
        async with db.unit_of_work() as holder:
            await holder.tasks.count()  # holds the only connection
            report_during = db.pool_status()
            async with db.unit_of_work() as waiter:
                with pytest.raises(PoolTimeoutError, match="no database connection"):
                    await asyncio.wait_for(waiter.tasks.count(), timeout=20)
        assert report_during.checked_out == 1
        async with db.unit_of_work() as uow:  # and the pool recovers
            assert await uow.tasks.count() == 0
    finally:
        await db.close()


async def test_read_only_units_refuse_writes(db: Database) -> None:
    await add_tasks(db, task())
    async with db.unit_of_work(read_only=True) as uow:
        assert await uow.tasks.count() == 1
        with pytest.raises(ReadOnlyError):
            await uow.tasks.add(task())
    async with db.unit_of_work() as uow:  # the same pooled connection writes again
        await uow.tasks.add(task())
        await uow.commit()
    async with db.unit_of_work(read_only=True) as uow:
        assert await uow.tasks.count() == 2


async def test_a_read_only_units_first_statement_cannot_write(db: Database) -> None:
    """A read-only unit's statements sent straight to the driver begin no
    transaction: the connection is made read-only as the unit checks it
    out, here one the pool last gave a write unit."""
    (added,) = await add_tasks(db, task())
    async with db.unit_of_work(read_only=True) as uow:
        with pytest.raises(ReadOnlyError):
            await uow.tasks.update(added.id, title="changed")
    async with db.unit_of_work(read_only=True) as uow:
        with pytest.raises(ReadOnlyError):
            await uow.tasks.delete(added.id)
    async with db.unit_of_work(read_only=True) as uow:
        assert (await uow.tasks.get(added.id)).title == added.title
        assert await uow.tasks.exists(title=added.title)


async def test_readers_run_while_a_writer_holds_the_lock(db: Database) -> None:
    await add_tasks(db, task())
    async with db.unit_of_work() as writer:
        await writer.tasks.add(task())  # uncommitted, lock held on SQLite
        async with db.unit_of_work(read_only=True) as reader:
            assert await asyncio.wait_for(reader.tasks.count(), timeout=5) == 1
        await writer.commit()


async def test_unmigrated_database_says_so(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    try:
        with pytest.raises(SchemaNotReadyError, match="migrate"):
            async with db.unit_of_work() as uow:
                await uow.tasks.count()
        report = await db.health_check()
        assert not report.ok and report.error is not None and "not been migrated" in report.error
        assert report.current_revision is None
        assert not report.up_to_date
    finally:
        await db.close()


async def test_in_memory_sqlite_shares_one_database() -> None:
    async with Database("sqlite+aiosqlite://") as db:
        await db.migrate()
        async with db.unit_of_work() as uow:
            await uow.tasks.add(Task(title="in memory", task_type="code", config={}))
            await uow.commit()
        async with db.unit_of_work() as uow:
            assert [t.title for t in await uow.tasks.list()] == ["in memory"]

        # Units of work queue for the single connection rather than see
        # an empty database.
        async def count() -> int:
            async with db.unit_of_work(read_only=True) as uow:
                return await uow.tasks.count()

        assert await asyncio.gather(*(count() for _ in range(5))) == [1] * 5


def test_bad_urls_and_settings_are_validation_errors() -> None:
    with pytest.raises(ValidationError, match="unsupported database URL"):
        Database("mysql://localhost/db")
    with pytest.raises(ValidationError, match="invalid database URL"):
        Database("not a url at all")
    with pytest.raises(ValidationError, match="unknown database setting"):
        Database("sqlite+aiosqlite://", pool_sise=3)  # type: ignore[call-arg]


def test_plain_urls_get_the_async_drivers() -> None:
    assert Database("sqlite:///x.db").url.drivername == "sqlite+aiosqlite"
    assert Database("postgresql://u@h/db").url.drivername == "postgresql+asyncpg"


def test_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ORCHESTRATOR_DB_URL", f"sqlite+aiosqlite:///{tmp_path / 'env.db'}")
    assert Database.from_env().url.database == str(tmp_path / "env.db")
    monkeypatch.delenv("ORCHESTRATOR_DB_URL")
    assert Database.from_env().url.database == "./orchestrator.db"


def test_creating_a_database_connects_to_nothing() -> None:
    db = Database("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    assert db.pool_status().checked_out == 0
    assert "nobody" in repr(db)


async def test_close_and_reuse(db: Database) -> None:
    await add_tasks(db, task())
    await db.close()
    async with db.unit_of_work() as uow:  # a closed Database reconnects on use
        assert await uow.tasks.count() == 1


async def test_password_is_hidden_in_repr() -> None:
    db = Database("postgresql+asyncpg://user:s3cret@127.0.0.1:1/none")
    assert "s3cret" not in repr(db)
    await db.close()


@pytest.mark.parametrize("inline", [False, True], ids=["thread", "inline"])
async def test_a_sqlite_read_only_unit_holds_no_transaction(sqlite_url: str, inline: bool) -> None:
    """Read-only units send no BEGIN (each statement is its own snapshot,
    as on PostgreSQL): one hop per read, and a unit kept open does not pin
    the WAL, which a checkpoint can then truncate."""
    db = Database(sqlite_url, sqlite_execution="inline" if inline else "thread")
    try:
        (added,) = await add_tasks(db, task())
        async with db.unit_of_work(read_only=True) as uow:
            assert (await uow.tasks.get(added.id)).id == added.id
            assert await uow.tasks.count() == 1
            path = sqlite_url.split("///", 1)[1]
            with sqlite3.connect(path) as other:
                busy, _, _ = other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            assert busy == 0
            with pytest.raises(ReadOnlyError):
                await uow.tasks.add(task())
    finally:
        await db.close()


async def test_a_pragma_in_a_read_only_unit_does_not_outlive_it(sqlite_db: Database) -> None:
    """Without BEGIN, a read-only unit's PRAGMA would take effect on its
    pooled connection: it is refused, and the next write unit checks
    foreign keys all the same."""
    async with sqlite_db.unit_of_work(read_only=True) as uow:
        with pytest.raises(ReadOnlyError):
            await uow.session.execute(text("PRAGMA foreign_keys = OFF"))
    with pytest.raises(ForeignKeyViolationError):
        async with sqlite_db.unit_of_work() as uow:
            await uow.tool_executions.start(new_id(), "shell", {"cmd": "ls"})
            await uow.commit()
