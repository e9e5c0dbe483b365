"""SQLite: the package against raw ``sqlite3`` and raw ``aiosqlite``.

Both sides do the same work: rows are built from the same Python values
(ids minted, JSON serialised, timestamps formatted inside the timing), on the
same migrated schema, with the same pragmas (WAL, synchronous=NORMAL).
"""

from __future__ import annotations

import gc
import json
import shutil
import sqlite3
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiosqlite
from sqlalchemy import delete

from bench.common import Row, interleaved_medians, median_seconds, print_table
from orchestrator_db import Database, Task
from orchestrator_db.types import format_sqlite_timestamp, utc_now
from orchestrator_db.values import encode_cursor

BULK_ROWS = 10_000
GET_OPS = 1_000
UPDATE_OPS = 300
PAGE_TABLE_ROWS = 100_000
PAGE_SIZE = 50

# Every column of tasks, as the package's get reads them (names from our own
# schema, not values: nothing here is user input).
COLUMNS = ", ".join(column.name for column in Task.__table__.columns)
SELECT_BY_ID = f"SELECT {COLUMNS} FROM tasks WHERE id = ?"


def task_values(count: int) -> list[dict[str, Any]]:
    return [
        {"title": f"task {i}", "task_type": "code", "config": {"lang": "py", "i": i}}
        for i in range(count)
    ]


def raw_rows(values: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    now = format_sqlite_timestamp(utc_now())
    return [
        (
            str(uuid.uuid4()),
            v["title"],
            v["task_type"],
            "pending",
            json.dumps(v["config"]),
            now,
            now,
        )
        for v in values
    ]


RAW_INSERT = (
    "INSERT INTO tasks (id, title, task_type, status, config, created_at, updated_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)


async def bench_add_many(db: Database, path: Path) -> list[Row]:
    values = task_values(BULK_ROWS)

    async def clear() -> None:
        async with db.unit_of_work() as uow:
            await uow.session.execute(delete(Task))
            await uow.commit()

    objects: list[Task] = []

    async def build_objects() -> None:
        await clear()
        objects[:] = [Task(**v) for v in values]

    async def package() -> None:
        async with db.unit_of_work() as uow:
            await uow.tasks.add_many(objects)
            await uow.commit()

    async def package_with_construction() -> None:
        async with db.unit_of_work() as uow:
            await uow.tasks.add_many([Task(**v) for v in values])
            await uow.commit()

    def raw_sqlite3() -> None:
        connection = sqlite3.connect(path, isolation_level=None)
        connection.execute("PRAGMA synchronous = NORMAL")
        started = time.perf_counter()
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany(RAW_INSERT, raw_rows(values))
        connection.execute("COMMIT")
        timings.append(time.perf_counter() - started)
        connection.close()

    async def raw_aiosqlite() -> None:
        async with aiosqlite.connect(path, isolation_level=None) as connection:
            await connection.execute("PRAGMA synchronous = NORMAL")
            started = time.perf_counter()
            await connection.execute("BEGIN IMMEDIATE")
            await connection.executemany(RAW_INSERT, raw_rows(values))
            await connection.execute("COMMIT")
            timings.append(time.perf_counter() - started)

    rounds = 5
    ours = await median_seconds(package, rounds=rounds, setup=build_objects)
    ours_built = await median_seconds(package_with_construction, rounds=rounds, setup=clear)
    timings: list[float] = []
    for _ in range(rounds):
        await clear()
        gc.collect()
        raw_sqlite3()
    raw = sorted(timings)[rounds // 2]
    timings.clear()
    for _ in range(rounds):
        await clear()
        gc.collect()
        await raw_aiosqlite()
    raw_async = sorted(timings)[rounds // 2]
    await clear()

    def rate(seconds: float) -> str:
        return f"{BULK_ROWS / seconds:,.0f} rows/s"

    return [
        Row(
            f"add_many {BULK_ROWS:,} tasks + commit",
            rate(ours),
            f"sqlite3 executemany {rate(raw)}",
            raw / ours,
            ">= 0.6x sqlite3",
            raw / ours >= 0.6,
        ),
        Row(
            "  same, building the Task objects too",
            rate(ours_built),
            f"aiosqlite executemany {rate(raw_async)}",
            raw / ours_built,
            "(for context)",
            True,
        ),
    ]


async def bench_get(db: Database, path: Path) -> list[Row]:
    async with db.unit_of_work() as uow:
        tasks = await uow.tasks.add_many([Task(**v) for v in task_values(2_000)])
        await uow.commit()
    ids = [t.id for t in tasks]

    async def package() -> None:
        for i in range(GET_OPS):
            async with db.unit_of_work() as uow:
                await uow.tasks.get(ids[i % len(ids)])

    async def package_read_only() -> None:
        for i in range(GET_OPS):
            async with db.unit_of_work(read_only=True) as uow:
                await uow.tasks.get(ids[i % len(ids)])

    connection = await aiosqlite.connect(path)

    async def raw_aiosqlite() -> None:
        for i in range(GET_OPS):
            async with connection.execute(SELECT_BY_ID, (ids[i % len(ids)],)) as cursor:
                await cursor.fetchone()

    sync_connection = sqlite3.connect(path)

    async def raw_sqlite3() -> None:
        for i in range(GET_OPS):
            sync_connection.execute(SELECT_BY_ID, (ids[i % len(ids)],)).fetchone()

    await package()  # warm caches and the pool
    await raw_aiosqlite()
    medians = await interleaved_medians(
        {
            "ours": package,
            "ours_ro": package_read_only,
            "raw": raw_aiosqlite,
            "raw_sync": raw_sqlite3,
        },
        rounds=7,
    )
    ours, ours_ro, raw, raw_sync = (
        medians[name] / GET_OPS for name in ("ours", "ours_ro", "raw", "raw_sync")
    )
    await connection.close()
    sync_connection.close()

    def us(seconds: float) -> str:
        return f"{seconds * 1e6:,.0f} us/op"

    return [
        Row(
            "get by id, own unit of work",
            us(ours),
            f"aiosqlite SELECT {us(raw)}",
            ours / raw,
            "<= 4x aiosqlite",
            ours / raw <= 4,
        ),
        Row(
            "  same, read-only unit of work",
            us(ours_ro),
            f"aiosqlite SELECT {us(raw)}",
            ours_ro / raw,
            "(for context)",
            True,
        ),
        Row(
            "  sqlite3 SELECT, no thread hop",
            us(raw_sync),
            f"aiosqlite SELECT {us(raw)}",
            raw_sync / raw,
            "(for context)",
            True,
        ),
    ]


async def bench_page(db: Database) -> list[Row]:
    values = task_values(10_000)
    base = utc_now()
    for chunk in range(PAGE_TABLE_ROWS // 10_000):
        async with db.unit_of_work() as uow:
            rows = [Task(**v) for v in values]
            for offset, row in enumerate(rows):  # distinct, increasing creation times
                row.created_at = base + timedelta(milliseconds=chunk * 10_000 + offset)
            await uow.tasks.add_many(rows)
            await uow.commit()
    async with db.unit_of_work(read_only=True) as uow:
        total = await uow.tasks.count()
        deep_row = (await uow.tasks.list(limit=1, offset=total - 1000))[0]
    deep_cursor = encode_cursor([deep_row.created_at, deep_row.id])

    async def first_page() -> None:
        for _ in range(100):
            async with db.unit_of_work(read_only=True) as uow:
                page = await uow.tasks.page(limit=PAGE_SIZE)
                assert len(page.items) == PAGE_SIZE

    async def deep_page() -> None:
        for _ in range(100):
            async with db.unit_of_work(read_only=True) as uow:
                page = await uow.tasks.page(limit=PAGE_SIZE, after=deep_cursor)
                assert len(page.items) == PAGE_SIZE

    async def deep_offset() -> None:
        for _ in range(10):
            async with db.unit_of_work(read_only=True) as uow:
                await uow.tasks.list(limit=PAGE_SIZE, offset=total - 1000)

    await first_page()
    first = await median_seconds(first_page, rounds=5) / 100
    deep = await median_seconds(deep_page, rounds=5) / 100
    deep_offset_time = await median_seconds(deep_offset, rounds=3) / 10

    def us(seconds: float) -> str:
        return f"{seconds * 1e6:,.0f} us/page"

    return [
        Row(
            f"page of {PAGE_SIZE} at row {total - 1000:,} of {total:,}",
            us(deep),
            f"first page {us(first)}",
            deep / first,
            "<= 1.5x first",
            deep / first <= 1.5,
        ),
        Row(
            "  same depth with OFFSET (list)",
            us(deep_offset_time),
            f"first page {us(first)}",
            deep_offset_time / first,
            "(why keyset)",
            True,
        ),
    ]


async def bench_update(db: Database, path: Path) -> list[Row]:
    """One row's update in its own unit of work, committed: one UPDATE ...
    RETURNING in a transaction, against aiosqlite's UPDATE and COMMIT."""
    async with db.unit_of_work() as uow:
        tasks = await uow.tasks.add_many([Task(**v) for v in task_values(2_000)])
        await uow.commit()
    ids = [t.id for t in tasks]

    async def package() -> None:
        for i in range(UPDATE_OPS):
            async with db.unit_of_work() as uow:
                await uow.tasks.update(ids[i % len(ids)], title=f"renamed {i}")
                await uow.commit()

    connection = await aiosqlite.connect(path)

    async def raw_aiosqlite() -> None:
        for i in range(UPDATE_OPS):
            await connection.execute(
                "UPDATE tasks SET title = ? WHERE id = ?", (f"raw {i}", ids[i % len(ids)])
            )
            await connection.commit()

    await package()
    medians = await interleaved_medians({"ours": package, "raw": raw_aiosqlite}, rounds=7)
    ours, raw = (medians[name] / UPDATE_OPS for name in ("ours", "raw"))
    await connection.close()
    return [
        Row(
            "update one row, own unit of work",
            f"{ours * 1e6:,.0f} us/op",
            f"aiosqlite UPDATE+COMMIT {raw * 1e6:,.0f} us",
            ours / raw,
            "<= 2x aiosqlite",
            ours / raw <= 2,
        )
    ]


async def run() -> None:
    directory = Path(tempfile.mkdtemp(prefix="orchestrator_db-bench-"))
    path = directory / "bench.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        await db.migrate()
        rows = await bench_add_many(db, path)
        rows += await bench_get(db, path)
        rows += await bench_update(db, path)
        rows += await bench_page(db)
        print_table(f"SQLite {sqlite3.sqlite_version} (WAL, synchronous=NORMAL)", rows)
    finally:
        await db.close()
        shutil.rmtree(directory, ignore_errors=True)
