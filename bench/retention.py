"""Retention: ``db.prune`` against one raw ``DELETE`` doing the same job.

The database holds ``FINISHED`` finished tasks, half of them with a tool
execution, behind ``QUEUED`` queued ones. The package prunes them in its
batches (each a short transaction, so that workers keep claiming); the
baseline deletes them in one statement through the raw driver (sqlite3,
asyncpg), the tool executions going by the foreign key's cascade, holding
the write lock all along. Two rows per engine: the whole prune against the
single statement, and the longest batch (how long the package held the
write lock at once) against the 100 ms it promises.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import sqlite3
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import ADMIN_DSN, Row, pg_admin, print_table
from orchestrator_db import Database, Task, TaskStatus, ToolExecution, ToolExecutionStatus

FINISHED = 100_000
QUEUED = 1_000
BATCH = 20_000
RAW_DELETE = "DELETE FROM tasks WHERE status IN ('completed', 'failed', 'cancelled')"


async def _fill(db: Database) -> None:
    for _ in range(0, FINISHED, BATCH):
        tasks = [
            Task(title="done", task_type="code", config={}, status=TaskStatus.COMPLETED)
            for _ in range(BATCH)
        ]
        async with db.unit_of_work() as uow:
            await uow.tasks.add_many(tasks)
            await uow.tool_executions.add_many(
                [
                    ToolExecution(
                        task_id=t.id,
                        tool_name="grep",
                        arguments={},
                        status=ToolExecutionStatus.COMPLETED,
                    )
                    for t in tasks[::2]
                ]
            )
            await uow.commit()
    async with db.unit_of_work() as uow:
        await uow.tasks.submit_many(
            [Task(title="queued", task_type="code", config={}) for _ in range(QUEUED)]
        )
        await uow.commit()


async def _prune(db: Database) -> tuple[float, float, dict[str, int]]:
    """Seconds of the whole prune, and of its longest batch."""
    marks = [time.perf_counter()]
    started = marks[0]
    deleted = await db.prune(
        older_than=timedelta(0), progress=lambda table, count: marks.append(time.perf_counter())
    )
    total = time.perf_counter() - started
    longest = max(b - a for a, b in itertools.pairwise(marks))
    return total, longest, deleted


def _rows(
    engine: str, total: float, longest: float, raw: float, deleted: dict[str, int]
) -> list[Row]:
    assert deleted["tasks"] == FINISHED, deleted
    return [
        Row(
            f"{engine}: prune {FINISHED:,} tasks, {FINISHED // 2:,} tool calls",
            f"{total * 1e3:,.0f} ms",
            f"one raw DELETE {raw * 1e3:,.0f} ms",
            total / raw,
            "<= 3x",
            total / raw <= 3.0,
        ),
        # SQLite's writers wait for the batch (the database's write lock);
        # PostgreSQL's wait only for the rows it deletes, which no one claims.
        Row(
            f"{engine}: longest prune batch"
            + (" (write lock held)" if engine == "SQLite" else " (row locks)"),
            f"{longest * 1e3:,.1f} ms",
            f"one raw DELETE {raw * 1e3:,.0f} ms",
            longest / raw,
            "<= 100 ms" if engine == "SQLite" else "(information)",
            longest <= 0.1 if engine == "SQLite" else True,
        ),
    ]


async def run_sqlite() -> list[Row]:
    directory = Path(tempfile.mkdtemp(prefix="orchestrator_db-retention-"))
    try:
        path = directory / "package.db"
        db = Database(f"sqlite+aiosqlite:///{path}")
        await db.migrate()
        await _fill(db)
        await db.close()
        copy = directory / "raw.db"
        with sqlite3.connect(path) as connection:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        shutil.copy(path, copy)

        connection = sqlite3.connect(copy, isolation_level=None)
        connection.execute("PRAGMA foreign_keys = ON")
        started = time.perf_counter()
        connection.execute("BEGIN IMMEDIATE")
        connection.execute(RAW_DELETE)
        connection.execute("COMMIT")
        raw = time.perf_counter() - started
        connection.close()

        db = Database(f"sqlite+aiosqlite:///{path}")
        try:
            total, longest, deleted = await _prune(db)
        finally:
            await db.close()
        return _rows("SQLite", total, longest, raw, deleted)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def run_postgresql() -> list[Row]:
    try:
        await pg_admin("SELECT 1")
    except (OSError, asyncpg.PostgresError) as error:
        print(f"\n!! PostgreSQL retention benchmark SKIPPED: {ADMIN_DSN} unreachable ({error})")
        return []
    base = ADMIN_DSN.rsplit("/", 1)[0]
    times: dict[str, Any] = {}
    for name in ("package", "raw"):
        database = f"odb_retention_{os.getpid()}_{name}"
        await pg_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await pg_admin(f'CREATE DATABASE "{database}"')
        try:
            url = f"{base}/{database}"
            db = Database(url.replace("postgresql://", "postgresql+asyncpg://", 1))
            try:
                await db.migrate()
                await _fill(db)
                await pg_admin("CHECKPOINT")
                # As autovacuum would soon after a bulk load: the statistics
                # that make the planner walk idx_tasks_finished in order.
                analyzer = await asyncpg.connect(url)
                await analyzer.execute("ANALYZE")
                await analyzer.close()
                if name == "package":
                    times[name] = await _prune(db)
                    continue
            finally:
                await db.close()
            connection = await asyncpg.connect(url)
            try:
                started = time.perf_counter()
                await connection.execute(RAW_DELETE)
                times[name] = time.perf_counter() - started
            finally:
                await connection.close()
        finally:
            await pg_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    total, longest, deleted = times["package"]
    return _rows("PostgreSQL", total, longest, times["raw"], deleted)


async def run() -> None:
    rows = await run_sqlite()
    rows += await run_postgresql()
    print_table("Retention", rows)


if __name__ == "__main__":
    asyncio.run(run())
