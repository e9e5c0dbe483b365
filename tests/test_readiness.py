"""Start-up and health (seed 001) and running a unit of work again
(``db.run``): against silent servers, servers that come up late, schemas
behind, and connections killed mid-unit."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from orchestrator_db import Database, UnitOfWork
from orchestrator_db.errors import (
    DatabaseConfigurationError,
    DatabaseUnavailableError,
    SchemaNotReadyError,
    TransactionConflictError,
    ValidationError,
)
from orchestrator_db.migrations.runner import head_revision
from tests.helpers import add_tasks, silent_server, task

#: Far above any timeout these tests set: a probe that got here has hung.
HANG = 20


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def forward(port: int, target: tuple[str, int]) -> asyncio.Server:
    """From now on, connections to ``port`` reach ``target``."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*target)
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    return await asyncio.start_server(accept, "127.0.0.1", port)


# ------------------------------------------------------------------ health


async def test_health_check_returns_within_its_timeout_from_a_silent_server() -> None:
    async with silent_server() as port:
        db = Database(f"postgresql+asyncpg://nobody@127.0.0.1:{port}/none")
        try:
            report = await asyncio.wait_for(db.health_check(timeout=0.3), HANG)
            with pytest.raises(DatabaseUnavailableError, match=r"not ready within 0\.5 s"):
                await asyncio.wait_for(db.wait_until_ready(timeout=0.5), HANG)
        finally:
            await db.close()
    assert not report.ok and not report.reachable
    assert report.error == "no answer within 0.3 s"


async def test_health_check_returns_while_sqlite_waits_for_a_lock(sqlite_url: str) -> None:
    """A statement in aiosqlite's thread cannot be interrupted: the report
    comes back anyway, and the probe finishes on its own."""
    path = sqlite_url.split("///", 1)[1]
    holder = sqlite3.connect(path)
    holder.execute("PRAGMA locking_mode = EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    db = Database(sqlite_url, busy_timeout=3)
    try:
        report = await asyncio.wait_for(db.health_check(timeout=0.3), HANG)
        assert not report.ok and report.error == "no answer within 0.3 s"
    finally:
        holder.rollback()
        holder.close()
    try:
        assert (await db.wait_until_ready(timeout=HANG, at_head=True)).ok
    finally:
        await db.close()


async def test_health_names_a_schema_behind_or_missing(own_db: Database) -> None:
    db = own_db
    await db.downgrade("-1")
    report = await db.health_check()
    assert not report.ok and report.reachable
    assert report.error is not None and "not at" in report.error
    assert report.current_revision != report.head_revision == head_revision()
    await db.downgrade("base")
    report = await db.health_check()
    assert not report.ok and report.reachable
    assert report.error is not None and "not been migrated" in report.error

    assert (await db.wait_until_ready(timeout=1)).reachable  # it answers
    with pytest.raises(SchemaNotReadyError, match="not been migrated"):
        await db.wait_until_ready(timeout=0.3, at_head=True)
    await db.migrate()
    assert (await db.wait_until_ready(timeout=1, at_head=True)).ok


async def test_wait_until_ready_waits_for_a_server_that_comes_up(
    postgres_database_url: str,
) -> None:
    url = make_url(postgres_database_url)
    port = _free_port()
    db = Database(url.set(host="127.0.0.1", port=port))
    waiting = asyncio.create_task(db.wait_until_ready(timeout=HANG, at_head=True))
    try:
        await asyncio.sleep(0.5)  # refused meanwhile: it retries
        assert not waiting.done()
        server = await forward(port, (url.host or "127.0.0.1", url.port or 5432))
        try:
            report = await waiting
            assert report.ok
            async with db.unit_of_work(read_only=True) as uow:
                assert await uow.tasks.count() == 0
        finally:
            await db.close()
            server.close()
    finally:
        waiting.cancel()


async def test_waiting_cannot_mend_a_refused_configuration(postgres_database_url: str) -> None:
    db = Database(postgres_database_url.rsplit("/", 1)[0] + "/odb_no_such_database")
    try:
        with pytest.raises(DatabaseConfigurationError):
            await asyncio.wait_for(db.wait_until_ready(timeout=HANG * 10), HANG)
    finally:
        await db.close()


@pytest.mark.parametrize("value", [0, -1, float("nan"), "5", True, 10**9])
async def test_timeouts_are_checked(db: Database, value: Any) -> None:
    with pytest.raises(ValidationError):
        await db.health_check(timeout=value)
    with pytest.raises(ValidationError):
        await db.wait_until_ready(timeout=value)


# --------------------------------------------------------------------- run


async def test_run_commits_what_the_work_returns(db: Database) -> None:
    async def add(uow: UnitOfWork) -> str:
        return (await uow.tasks.add(task(title="ran"))).id

    task_id = await db.run(add)

    async def title(uow: UnitOfWork) -> str:
        return (await uow.tasks.get(task_id)).title

    assert await db.run(title, read_only=True) == "ran"


async def test_run_retries_a_conflict_in_a_fresh_unit(db: Database) -> None:
    attempts: list[int] = []

    async def conflicted_twice(uow: UnitOfWork) -> int:
        await uow.tasks.add(task())
        attempts.append(len(attempts))
        if len(attempts) < 3:
            raise TransactionConflictError("lost a race")
        return await uow.tasks.count()

    assert await db.run(conflicted_twice) == 1  # the rolled-back attempts left nothing
    assert attempts == [0, 1, 2]
    attempts.clear()
    with pytest.raises(TransactionConflictError):
        await db.run(conflicted_twice, retries=1)
    assert attempts == [0, 1]
    async with db.unit_of_work(read_only=True) as uow:
        assert await uow.tasks.count() == 1


async def test_run_survives_a_killed_connection(postgres_database_url: str) -> None:
    db = Database(postgres_database_url)
    killer = Database(postgres_database_url)
    attempts = 0

    async def killed_once(uow: UnitOfWork) -> int:
        nonlocal attempts
        attempts += 1
        await uow.tasks.add(task())
        if attempts == 1:
            pid = (await uow.session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            async with killer.engine.begin() as connection:
                await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        return await uow.tasks.count()

    try:
        await add_tasks(db, task())
        assert await db.run(killed_once) == 2
        assert attempts == 2
    finally:
        await db.close()
        await killer.close()


@pytest.mark.parametrize("retries", [-1, 101, 1.5, "3", None])
async def test_run_checks_its_arguments(db: Database, retries: Any) -> None:
    async def work(uow: UnitOfWork) -> None:
        raise AssertionError("not to be run")

    with pytest.raises(ValidationError):
        await db.run(work, retries=retries)
    with pytest.raises(ValidationError):
        await db.run("work", retries=1)  # type: ignore[arg-type]
