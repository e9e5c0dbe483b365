"""PostgreSQL: the package against raw asyncpg on the same schema and data.

A scratch database is created on $ORCHESTRATOR_BENCH_PG_DSN (default: the
local server's ``test`` database as maintenance connection) and dropped after.
"""

from __future__ import annotations

import gc
import json
import os
import uuid
from datetime import timedelta
from typing import Any

import asyncpg

from bench.common import (
    ADMIN_DSN,
    Row,
    interleaved_medians,
    median_seconds,
    pg_admin,
    print_table,
)
from bench.sqlite import (
    BULK_ROWS,
    GET_OPS,
    PAGE_SIZE,
    PAGE_TABLE_ROWS,
    UPDATE_OPS,
    task_values,
)
from bench.sqlite import COLUMNS as TASK_COLUMNS
from orchestrator_db import Database, Task
from orchestrator_db.types import utc_now
from orchestrator_db.values import encode_cursor

NAME = f"odb_bench_{os.getpid()}"
COLUMNS = ["id", "title", "task_type", "status", "config", "created_at", "updated_at"]
RAW_INSERT = (
    "INSERT INTO tasks (id, title, task_type, status, config, created_at, updated_at) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7)"
)
SELECT_BY_ID = f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1"


def raw_records(values: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    now = utc_now()
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


async def bench_add_many(db: Database, dsn: str) -> list[Row]:
    values = task_values(BULK_ROWS)
    objects: list[Task] = []
    raw = await asyncpg.connect(dsn)

    async def clear() -> None:
        await raw.execute("TRUNCATE tasks CASCADE")

    async def build() -> None:
        await clear()
        objects[:] = [Task(**v) for v in values]

    async def package() -> None:
        async with db.unit_of_work() as uow:
            await uow.tasks.add_many(objects)
            await uow.commit()

    async def raw_executemany() -> None:
        async with raw.transaction():
            await raw.executemany(RAW_INSERT, raw_records(values))

    async def raw_copy() -> None:
        async with raw.transaction():
            await raw.copy_records_to_table("tasks", records=raw_records(values), columns=COLUMNS)

    ours = await median_seconds(package, rounds=5, setup=build)
    many = await median_seconds(raw_executemany, rounds=5, setup=clear)
    copy = await median_seconds(raw_copy, rounds=5, setup=clear)
    await clear()
    await raw.close()

    def rate(seconds: float) -> str:
        return f"{BULK_ROWS / seconds:,.0f} rows/s"

    return [
        Row(
            f"add_many {BULK_ROWS:,} tasks + commit",
            rate(ours),
            f"asyncpg executemany {rate(many)}",
            many / ours,
            ">= 0.6x executemany",
            many / ours >= 0.6,
        ),
        Row(
            "  same, against COPY",
            rate(ours),
            f"asyncpg copy_records {rate(copy)}",
            copy / ours,
            ">= 0.6x copy",
            copy / ours >= 0.6,
        ),
    ]


async def bench_get(db: Database, dsn: str) -> list[Row]:
    async with db.unit_of_work() as uow:
        tasks = await uow.tasks.add_many([Task(**v) for v in task_values(2_000)])
        await uow.commit()
    ids = [t.id for t in tasks]
    raw = await asyncpg.connect(dsn)

    async def package() -> None:
        for i in range(GET_OPS):
            async with db.unit_of_work() as uow:
                await uow.tasks.get(ids[i % len(ids)])

    async def package_read_only() -> None:
        for i in range(GET_OPS):
            async with db.unit_of_work(read_only=True) as uow:
                await uow.tasks.get(ids[i % len(ids)])

    async def raw_fetch() -> None:
        for i in range(GET_OPS):
            await raw.fetchrow(SELECT_BY_ID, ids[i % len(ids)])

    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)

    async def raw_pool_fetch() -> None:
        # What "a read in its own unit of work" costs in raw asyncpg: a pooled
        # connection per read (asyncpg resets it on release: a round trip).
        for i in range(GET_OPS):
            async with pool.acquire() as connection:
                await connection.fetchrow(SELECT_BY_ID, ids[i % len(ids)])

    async def raw_fetch_in_transaction() -> None:
        for i in range(GET_OPS):
            async with raw.transaction():
                await raw.fetchrow(SELECT_BY_ID, ids[i % len(ids)])

    await package()
    await raw_fetch()
    medians = await interleaved_medians(
        {
            "ours": package,
            "ours_ro": package_read_only,
            "base": raw_fetch,
            "base_tx": raw_fetch_in_transaction,
            "base_pool": raw_pool_fetch,
        },
        rounds=7,
    )
    ours, ours_ro, base, base_tx, base_pool = (
        medians[name] / GET_OPS for name in ("ours", "ours_ro", "base", "base_tx", "base_pool")
    )
    await raw.close()
    await pool.close()

    def us(seconds: float) -> str:
        return f"{seconds * 1e6:,.0f} us/op"

    # Like against like: a read-only unit of work runs no transaction (one
    # round trip), a write unit of work runs one (BEGIN, SELECT, ROLLBACK).
    return [
        Row(
            "get by id, own read-only unit of work",
            us(ours_ro),
            f"asyncpg fetchrow {us(base)}",
            ours_ro / base,
            "<= 3x asyncpg",
            ours_ro / base <= 3,
        ),
        Row(
            "  read-only unit against an asyncpg pool",
            us(ours_ro),
            f"pool acquire+fetchrow {us(base_pool)}",
            ours_ro / base_pool,
            "(for context)",
            True,
        ),
        Row(
            "get by id, own write unit of work",
            us(ours),
            f"fetchrow in a transaction {us(base_tx)}",
            ours / base_tx,
            "<= 3x asyncpg",
            ours / base_tx <= 3,
        ),
        Row(
            "  write unit against a bare fetchrow",
            us(ours),
            f"asyncpg fetchrow {us(base)}",
            ours / base,
            "(for context)",
            True,
        ),
    ]


async def bench_update(db: Database, dsn: str) -> list[Row]:
    """One row's update in its own unit of work, committed (BEGIN, UPDATE ...
    RETURNING, COMMIT), against the same in raw asyncpg."""
    async with db.unit_of_work() as uow:
        tasks = await uow.tasks.add_many([Task(**v) for v in task_values(2_000)])
        await uow.commit()
    ids = [t.id for t in tasks]
    raw = await asyncpg.connect(dsn)
    returning = f"UPDATE tasks SET title = $1 WHERE id = $2 RETURNING {TASK_COLUMNS}"

    async def package() -> None:
        for i in range(UPDATE_OPS):
            async with db.unit_of_work() as uow:
                await uow.tasks.update(ids[i % len(ids)], title=f"renamed {i}")
                await uow.commit()

    async def raw_in_transaction() -> None:
        for i in range(UPDATE_OPS):
            async with raw.transaction():
                await raw.fetchrow(returning, f"raw {i}", ids[i % len(ids)])

    await package()
    medians = await interleaved_medians({"ours": package, "raw": raw_in_transaction}, rounds=7)
    ours, base = (medians[name] / UPDATE_OPS for name in ("ours", "raw"))
    await raw.close()
    return [
        Row(
            "update one row, own unit of work",
            f"{ours * 1e6:,.0f} us/op",
            f"asyncpg, in a transaction {base * 1e6:,.0f} us",
            ours / base,
            "<= 2x asyncpg",
            ours / base <= 2,
        )
    ]


async def bench_page(db: Database) -> list[Row]:
    values = task_values(10_000)
    base = utc_now()
    for chunk in range(PAGE_TABLE_ROWS // 10_000):
        async with db.unit_of_work() as uow:
            rows = [Task(**v) for v in values]
            for offset, row in enumerate(rows):
                row.created_at = base + timedelta(milliseconds=chunk * 10_000 + offset)
            await uow.tasks.add_many(rows)
            await uow.commit()
    async with db.engine.begin() as connection:
        await connection.exec_driver_sql("ANALYZE tasks")
    async with db.unit_of_work(read_only=True) as uow:
        total = await uow.tasks.count()
        deep_row = (await uow.tasks.list(limit=1, offset=total - 1000))[0]
    deep_cursor = encode_cursor([deep_row.created_at, deep_row.id])

    async def first_page() -> None:
        for _ in range(100):
            async with db.unit_of_work(read_only=True) as uow:
                await uow.tasks.page(limit=PAGE_SIZE)

    async def deep_page() -> None:
        for _ in range(100):
            async with db.unit_of_work(read_only=True) as uow:
                await uow.tasks.page(limit=PAGE_SIZE, after=deep_cursor)

    await first_page()
    first = await median_seconds(first_page, rounds=5) / 100
    deep = await median_seconds(deep_page, rounds=5) / 100

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
        )
    ]


async def run() -> None:
    try:
        await pg_admin(f'DROP DATABASE IF EXISTS "{NAME}" WITH (FORCE)')
        await pg_admin(f'CREATE DATABASE "{NAME}"')
    except (OSError, asyncpg.PostgresError) as error:
        print(f"\n!! PostgreSQL benchmarks SKIPPED: {ADMIN_DSN} is not reachable ({error})")
        return
    dsn = ADMIN_DSN.rsplit("/", 1)[0] + f"/{NAME}"
    db = Database(dsn)
    try:
        await db.migrate()
        rows = await bench_add_many(db, dsn)
        rows += await bench_get(db, dsn)
        rows += await bench_update(db, dsn)
        rows += await bench_page(db)
        version = (await db.health_check()).server_version
        print_table(f"PostgreSQL {version} (asyncpg, READ COMMITTED)", rows)
    finally:
        await db.close()
        gc.collect()
        await pg_admin(f'DROP DATABASE IF EXISTS "{NAME}" WITH (FORCE)')
