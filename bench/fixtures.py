"""What a test pays for a migrated database of its own: the pytest plugin's
ways (``orchestrator_db.testing.database``) against the alternatives.

Each way prepares the database for one test and cleans up after it; every
test writes one row in between, so that emptying has something to do.
"Rollback" is the floor: a transaction begun on a connection held for the
whole suite and rolled back (it cannot serve tests whose units commit,
run at once or wake each other, which is why the plugin does not use it).

``python -m bench fixtures``.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

from bench.common import ADMIN_DSN, interleaved_medians, pg_admin
from orchestrator_db.models import Base
from orchestrator_db.testing.database import Baseline, PostgresServer, copy_sqlite, migrate

ROUNDS = 30
COPY = "PostgreSQL: copy, CREATE DATABASE TEMPLATE"
WRITE = "INSERT INTO projects (repository_name, path) VALUES ('acme/x', '/x')"


async def _write_sqlite(url: str) -> None:
    import aiosqlite

    async with aiosqlite.connect(url.split("///", 1)[1]) as connection:
        await connection.execute(WRITE)
        await connection.commit()


async def sqlite_ways(directory: Path) -> dict[str, Callable[[], Awaitable[None]]]:
    template = directory / "template.db"
    await migrate(f"sqlite+aiosqlite:///{template}")
    held = directory / "held.db"
    copy_sqlite(template, held)
    import aiosqlite

    connection = await aiosqlite.connect(held)
    counter = iter(range(1_000_000))

    async def copy() -> None:
        target = directory / f"copy{next(counter)}.db"
        await _write_sqlite(copy_sqlite(template, target))
        target.unlink()

    async def migrate_each() -> None:
        target = directory / f"migrated{next(counter)}.db"
        await migrate(f"sqlite+aiosqlite:///{target}")
        await _write_sqlite(f"sqlite+aiosqlite:///{target}")
        target.unlink()

    async def rollback() -> None:
        await connection.execute("BEGIN")
        await connection.execute(WRITE)
        await connection.rollback()

    return {
        "SQLite: copy of the file (the plugin)": copy,
        "SQLite: migrate each test": migrate_each,
        "SQLite: rollback (floor)": rollback,
    }


async def postgres_ways(
    name: str,
) -> tuple[dict[str, Callable[[], Awaitable[None]]], asyncpg.Connection, Baseline]:
    server = PostgresServer(ADMIN_DSN)
    await migrate(await server.create(name))
    # Copies are made of `name`, which must have no connections; the other
    # ways use a copy of their own.
    url = await server.create(f"{name}_work", template=name)
    baseline = await Baseline.capture(url)
    dsn = url.replace("postgresql+asyncpg", "postgresql")
    held = await asyncpg.connect(dsn)
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)

    async def write(target: str) -> None:
        connection = await asyncpg.connect(target)
        await connection.execute(WRITE)
        await connection.close()

    async def empty() -> None:
        await baseline.restore()
        await write(dsn)

    async def copy() -> None:
        await server.create(f"{name}_copy", template=name)
        await write(server.url_of(f"{name}_copy").replace("postgresql+asyncpg", "postgresql"))
        await server.drop(f"{name}_copy")

    async def truncate() -> None:
        connection = await asyncpg.connect(dsn)
        await connection.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
        await connection.close()
        await write(dsn)

    async def rollback() -> None:
        transaction = held.transaction()
        await transaction.start()
        await held.execute(WRITE.replace("acme/x", "acme/rolled-back"))
        await transaction.rollback()

    ways: dict[str, Callable[[], Awaitable[None]]] = {
        "PostgreSQL: restored, DELETE (the plugin)": empty,
        COPY: copy,
        "PostgreSQL: emptied, TRUNCATE": truncate,
        "PostgreSQL: rollback (floor)": rollback,
    }
    return ways, held, baseline


async def run() -> None:
    print("\nA migrated database per test (ms per test, median of interleaved rounds)")
    with tempfile.TemporaryDirectory() as directory:
        found = await interleaved_medians(await sqlite_ways(Path(directory)), rounds=ROUNDS)
    try:
        await pg_admin("SELECT 1")
    except (OSError, asyncpg.PostgresError):
        print("  PostgreSQL: SKIPPED, the server is not reachable")
    else:
        name = f"odb_bench_fixtures_{os.getpid()}"
        ways, held, baseline = await postgres_ways(name)
        try:
            # A copy's DROP DATABASE checkpoints, which would slow the
            # other ways' rounds: it is timed on its own, afterwards.
            copy = ways.pop(COPY)
            found |= await interleaved_medians(ways, rounds=ROUNDS)
            found |= await interleaved_medians({COPY: copy}, rounds=ROUNDS // 3)
        finally:
            await held.close()
            await baseline.close()
            for database in (name, f"{name}_work"):
                await PostgresServer(ADMIN_DSN).drop(database)
    for way, seconds in found.items():
        print(f"  {way:46s} {seconds * 1000:8.2f} ms")


if __name__ == "__main__":
    asyncio.run(run())
