"""The work queue: claim+complete throughput, and claim time against queue depth.

Each worker loops "claim the next task, complete it" until the queue is
empty, one of three ways (``LOOPS``): two units of work per task, one
``complete_and_claim`` unit of work per task, or one transaction per task on
a ``db.queue_worker`` connection. Workers are processes, which is how an
orchestrator scales on one machine; throughput is tasks per second from the
moment every worker is ready to the moment the queue is empty.

The raw baselines run the very same SQL, compiled from the package's own
statements (claim, complete, release of dependents), through raw sqlite3 and
raw asyncpg, with no ORM and no thread hops; like the package, the SQLite
loop releases dependents only when the completion says someone waits.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sqlite3
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg
from sqlalchemy import select, update

from bench.common import ADMIN_DSN, Row, pg_admin, print_table
from orchestrator_db import Database, DatabaseOptions, SQLiteExecution, Task, TaskStatus
from orchestrator_db.sql import queue as q
from orchestrator_db.types import utc_now

WORKER_COUNTS = (1, 4, 8)
PACKAGE_TASKS = 3_000
RAW_TASKS = 20_000
DEPTHS = (10_000, 1_000_000)


#: Of the queued tasks, one in ``DEADLINE_EVERY`` has a deadline.
DEADLINE_EVERY = 10
#: Scores due for ``reprioritize`` in its measurement (of the queued tasks
#: with a deadline: a tenth of 10,000, less those the claims took).
DUE = 500


async def _fill(db: Database, count: int) -> None:
    deadline = utc_now() + timedelta(days=1)
    for start in range(0, count, 20_000):
        batch = [
            Task(
                title="t",
                task_type="code",
                config={},
                deadline=deadline if n % DEADLINE_EVERY == 0 else None,
            )
            for n in range(start, min(start + 20_000, count))
        ]
        async with db.unit_of_work() as uow:
            await uow.tasks.submit_many(batch)
            await uow.commit()


# ----------------------------------------------------------------- package


#: How a package worker loops: "claim+complete" (two units of work per task),
#: "complete_and_claim" (one unit of work per task), "queue worker" (one
#: transaction per task on the worker's own connection, ``db.queue_worker``).
LOOPS = ("claim+complete", "complete_and_claim", "queue worker")


def _package_worker(
    url: str, name: str, loop: str, options: DatabaseOptions, ready: Any, go: Any
) -> int:
    """Claim, complete, repeat, the ``loop`` way (see ``LOOPS``)."""

    async def run() -> int:
        db = Database(url, **options)
        done = 0
        try:
            async with db.unit_of_work(read_only=True) as uow:
                await uow.tasks.count()  # connect before the clock starts
            if loop == "queue worker":
                async with db.queue_worker(name) as worker:
                    ready.set()
                    go.wait()
                    task = await worker.claim()
                    while task is not None:
                        task = await worker.complete_and_claim(task.id)
                        done += 1
                return done
            ready.set()
            go.wait()
            async with db.unit_of_work() as uow:
                task = await uow.tasks.claim_next(name)
                await uow.commit()
            while task is not None:
                if loop == "complete_and_claim":
                    async with db.unit_of_work() as uow:
                        task = await uow.tasks.complete_and_claim(task.id, name)
                        await uow.commit()
                else:
                    async with db.unit_of_work() as uow:
                        await uow.tasks.complete(task.id, name)
                        await uow.commit()
                    async with db.unit_of_work() as uow:
                        task = await uow.tasks.claim_next(name)
                        await uow.commit()
                done += 1
            return done
        finally:
            await db.close()

    return asyncio.run(run())


def _in_processes(target: Any, args: list[tuple[Any, ...]]) -> tuple[float, list[int]]:
    """Start one process per ``args``; time from all-ready to all-done."""
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    readies = [context.Event() for _ in args]
    results = context.Queue()
    processes = [
        context.Process(target=_collect, args=(results, target, (*a, ready, go)))
        for a, ready in zip(args, readies, strict=True)
    ]
    for process in processes:
        process.start()
    for ready in readies:
        ready.wait(120)
    started = time.perf_counter()
    go.set()
    counts = [results.get(timeout=600) for _ in processes]
    elapsed = time.perf_counter() - started
    for process in processes:
        process.join(30)
    return elapsed, counts


def _collect(results: Any, target: Any, args: tuple[Any, ...]) -> None:
    results.put(target(*args))


async def package_throughput(
    url: str,
    workers: int,
    *,
    loop: str = "claim+complete",
    options: DatabaseOptions | None = None,
) -> float:
    db = Database(url)
    try:
        await _fill(db, PACKAGE_TASKS)
    finally:
        await db.close()
    args = [(url, f"w{i}", loop, options or {}) for i in range(workers)]
    elapsed, counts = await asyncio.to_thread(_in_processes, _package_worker, args)
    assert sum(counts) == PACKAGE_TASKS, counts
    return PACKAGE_TASKS / elapsed


# --------------------------------------------------------------- raw drivers


Compiled = tuple[str, tuple[str, ...], dict[str, Any]]


def _compiled(statement: Any, dialect: Any, **sample: Any) -> Compiled:
    """SQL text as SQLAlchemy would send it, its positional parameter names
    and their default values. ``sample`` fills expanding parameters (IN)."""
    compiled = statement.compile(dialect=dialect)
    defaults = compiled.construct_params(sample, _check=False)
    expanded = compiled._process_parameters_for_postcompile(defaults)
    return expanded.statement, tuple(expanded.positiontup or ()), dict(expanded.parameters)


def _bind(compiled: Compiled, **values: Any) -> tuple[Any, ...]:
    _, names, defaults = compiled
    merged = {**defaults, **values}
    return tuple(merged[name] for name in names)


def _queue_sql(db: Database) -> tuple[Compiled, Compiled, Compiled]:
    """The package's claim, complete and release, compiled for ``db``."""
    dialect = db.engine.sync_engine.dialect
    return (
        _compiled(q.claim_statement(db.dialect, typed=0), dialect),
        _compiled(q.complete_statement(db.dialect), dialect),
        _compiled(q.release_statement(through_edges=True, single=True), dialect),
    )


# --------------------------------------------------------------- raw SQLite


def _raw_sqlite_worker(
    path: str, sql: tuple[Compiled, Compiled, Compiled], name: str, ready: Any, go: Any
) -> int:
    claim, complete, release = sql
    connection = sqlite3.connect(path, isolation_level=None, timeout=30)
    connection.execute("PRAGMA synchronous = NORMAL")
    connection.execute("PRAGMA foreign_keys = ON")
    ready.set()
    go.wait()
    done = 0
    while True:
        connection.execute("BEGIN IMMEDIATE")
        claim_args = _bind(claim, holder=name, lease_seconds=300.0, limit=1)
        row = connection.execute(claim[0], claim_args).fetchone()
        connection.execute("COMMIT")
        if row is None:
            return done
        connection.execute("BEGIN IMMEDIATE")
        complete_args = _bind(complete, task_key=row[0], holder=name, outcome=None)
        (completed,) = connection.execute(complete[0], complete_args).fetchall()
        if completed[-1]:  # waited_on: as the package, release only then
            connection.execute(release[0], _bind(release, one_id=row[0])).fetchall()
        connection.execute("COMMIT")
        done += 1


def _raw_aiosqlite_worker(
    path: str, sql: tuple[Compiled, Compiled, Compiled], name: str, ready: Any, go: Any
) -> int:
    """The raw sqlite3 loop through aiosqlite: what the thread hops alone cost."""
    claim, complete, release = sql

    async def run() -> int:
        async with aiosqlite.connect(path, isolation_level=None, timeout=30) as connection:
            await connection.execute("PRAGMA synchronous = NORMAL")
            await connection.execute("PRAGMA foreign_keys = ON")
            ready.set()
            await asyncio.to_thread(go.wait)
            done = 0
            while True:
                await connection.execute("BEGIN IMMEDIATE")
                claim_args = _bind(claim, holder=name, lease_seconds=300.0, limit=1)
                async with connection.execute(claim[0], claim_args) as cursor:
                    row = await cursor.fetchone()
                await connection.execute("COMMIT")
                if row is None:
                    return done
                await connection.execute("BEGIN IMMEDIATE")
                complete_args = _bind(complete, task_key=row[0], holder=name, outcome=None)
                (completed,) = await connection.execute_fetchall(complete[0], complete_args)
                if completed[-1]:  # waited_on
                    await connection.execute_fetchall(release[0], _bind(release, one_id=row[0]))
                await connection.execute("COMMIT")
                done += 1

    return asyncio.run(run())


async def raw_sqlite_throughput(
    db: Database, path: str, workers: int, *, through_aiosqlite: bool = False
) -> float:
    await _fill(db, RAW_TASKS)
    sql = _queue_sql(db)
    args = [(path, sql, f"raw{i}") for i in range(workers)]
    worker = _raw_aiosqlite_worker if through_aiosqlite else _raw_sqlite_worker
    elapsed, counts = await asyncio.to_thread(_in_processes, worker, args)
    assert sum(counts) == RAW_TASKS, counts
    return RAW_TASKS / elapsed


# ------------------------------------------------------------ claim vs depth


async def claim_times(db: Database, samples: int) -> list[float]:
    """Seconds of ``samples`` claims, each in its own unit of work."""
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        async with db.unit_of_work() as uow:
            await uow.tasks.claim_next("probe")
            await uow.commit()
        times.append(time.perf_counter() - started)
    return times


async def depth_rows(url_for: Any, settle: Any = None, rounds: int = 6) -> list[Row]:
    """Median claim time at each depth. Both queues are filled first (then
    ``settle``, which flushes what the bulk load left to write), and claims
    alternate between them in rounds, so that a burst of disk latency (a
    claim's commit waits for a flush) lands on both depths alike."""
    opened: dict[int, tuple[Database, Any]] = {}
    samples: dict[int, list[float]] = {depth: [] for depth in DEPTHS}
    idle: dict[int, list[float]] = {depth: [] for depth in DEPTHS}
    busy: dict[int, list[float]] = {depth: [] for depth in DEPTHS}
    try:
        for depth in DEPTHS:
            url, cleanup = await url_for(f"depth{depth}")
            db = Database(url)
            opened[depth] = (db, cleanup)
            await db.migrate()
            await _fill(db, depth)
        if settle is not None:
            await settle()
        for _ in range(rounds):
            for depth, (db, _) in opened.items():
                samples[depth] += await claim_times(db, 50)
        for _ in range(rounds):
            for depth, (db, _) in opened.items():
                idle[depth].append(await reprioritize_seconds(db, due=0))
                busy[depth].append(await reprioritize_seconds(db, due=DUE))
    finally:
        for db, cleanup in opened.values():
            await db.close()
            await cleanup()
    measured = {depth: statistics.median(times) for depth, times in samples.items()}
    low, high = DEPTHS
    ratio = measured[high] / measured[low]
    return [
        Row(
            f"claim with {high:,} queued",
            f"{measured[high] * 1e6:,.0f} us",
            f"with {low:,} queued {measured[low] * 1e6:,.0f} us",
            ratio,
            "flat (<= 1.5x)",
            ratio <= 1.5,
        ),
        *_flat_rows(f"reprioritize, nothing due, {high:,} queued", idle),
        *_flat_rows(f"reprioritize {DUE:,} due scores, {high:,} queued", busy),
    ]


def _flat_rows(operation: str, times: dict[int, list[float]]) -> list[Row]:
    """A row comparing the median at the deepest queue with the shallowest."""
    low, high = DEPTHS
    at = {depth: statistics.median(found) for depth, found in times.items()}
    ratio = at[high] / at[low]
    return [
        Row(
            operation,
            f"{at[high] * 1e3:,.2f} ms",
            f"with {low:,} queued {at[low] * 1e3:,.2f} ms",
            ratio,
            "flat (<= 1.5x)",
            ratio <= 1.5,
        )
    ]


async def reprioritize_seconds(db: Database, *, due: int) -> float:
    """Seconds of one ``reprioritize()`` unit of work with ``due`` scores due
    (made due beforehand, untimed)."""
    if due:
        async with db.unit_of_work() as uow:
            picked = (
                select(Task.id)
                .where(Task.reprioritize_at.is_not(None), Task.status == TaskStatus.READY)
                .order_by(Task.reprioritize_at.desc())
                .limit(due)
            )
            past = utc_now() - timedelta(seconds=1)
            statement = update(Task).where(Task.id.in_(picked)).values(reprioritize_at=past)
            await uow.session.execute(statement)
            await uow.commit()
    started = time.perf_counter()
    async with db.unit_of_work() as uow:
        changed = await uow.tasks.reprioritize()
        await uow.commit()
    elapsed = time.perf_counter() - started
    assert changed == due, (changed, due)
    return elapsed


# ------------------------------------------------------------------ runners


async def run_sqlite() -> None:
    directory = Path(tempfile.mkdtemp(prefix="orchestrator_db-queue-"))
    rows: list[Row] = []

    async def fresh(name: str) -> tuple[str, Any]:
        path = directory / f"{name}.db"
        db = Database(f"sqlite+aiosqlite:///{path}")
        await db.migrate()
        await db.close()

        async def cleanup() -> None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)

        return f"sqlite+aiosqlite:///{path}", cleanup

    raw_rates = {}
    for workers in (1, 4):
        url, cleanup = await fresh(f"raw{workers}")
        db = Database(url)
        raw_rates[workers] = await raw_sqlite_throughput(db, url.split("///", 1)[1], workers)
        await db.close()
        await cleanup()
    url, cleanup = await fresh("rawaio")
    db = Database(url)
    aio_rate = await raw_sqlite_throughput(db, url.split("///", 1)[1], 1, through_aiosqlite=True)
    await db.close()
    await cleanup()
    # (loop, sqlite_execution): the unit-of-work loops through aiosqlite's
    # thread, then complete_and_claim and the queue worker in both modes.
    variants: list[tuple[str, SQLiteExecution]] = [
        ("claim+complete", "thread"),
        ("complete_and_claim", "thread"),
        ("complete_and_claim", "inline"),
        ("queue worker", "thread"),
        ("queue worker", "inline"),
    ]
    for loop, execution in variants:
        for workers in WORKER_COUNTS:
            url, cleanup = await fresh(f"package{workers}{loop.replace(' ', '')}{execution}")
            options: DatabaseOptions = {"sqlite_execution": execution}
            rate = await package_throughput(url, workers, loop=loop, options=options)
            await cleanup()
            baseline = raw_rates[1]
            rows.append(
                Row(
                    f"{loop} ({execution}), {workers} process(es)",
                    f"{rate:,.0f} tasks/s",
                    f"raw sqlite3, 1 process {baseline:,.0f}/s",
                    rate / baseline,
                    ">= 0.3x raw (4 workers)" if workers == 4 else "(for context)",
                    rate / baseline >= 0.3 if workers == 4 else True,
                )
            )
    rows.append(
        Row(
            "  raw aiosqlite (same SQL), 1 process",
            f"{aio_rate:,.0f} tasks/s",
            f"raw sqlite3, 1 process {raw_rates[1]:,.0f}/s",
            aio_rate / raw_rates[1],
            "(thread hops alone)",
            True,
        )
    )
    rows.append(
        Row(
            "  raw sqlite3, 4 processes",
            f"{raw_rates[4]:,.0f} tasks/s",
            f"raw sqlite3, 1 process {raw_rates[1]:,.0f}/s",
            raw_rates[4] / raw_rates[1],
            "(for context)",
            True,
        )
    )

    async def sqlite_depth(name: str) -> tuple[str, Any]:
        return await fresh(name)

    rows += await depth_rows(sqlite_depth)
    print_table("SQLite work queue", rows)


def _raw_asyncpg_worker(
    dsn: str, sql: tuple[Compiled, Compiled, Compiled], name: str, ready: Any, go: Any
) -> int:
    claim, complete, release = sql

    async def run() -> int:
        connection = await asyncpg.connect(dsn)
        ready.set()
        await asyncio.to_thread(go.wait)
        done = 0
        while True:
            async with connection.transaction():
                claim_args = _bind(claim, holder=name, lease_seconds=300.0, limit=1)
                row = await connection.fetchrow(claim[0], *claim_args)
            if row is None:
                await connection.close()
                return done
            async with connection.transaction():
                complete_args = _bind(complete, task_key=row[0], holder=name, outcome=None)
                await connection.fetch(complete[0], *complete_args)
                await connection.fetch(release[0], *_bind(release, one_id=row[0]))
            done += 1

    return asyncio.run(run())


async def run_postgresql() -> None:
    try:
        await pg_admin("SELECT 1")
    except (OSError, asyncpg.PostgresError) as error:
        print(f"\n!! PostgreSQL queue benchmarks SKIPPED: {ADMIN_DSN} unreachable ({error})")
        return
    base = ADMIN_DSN.rsplit("/", 1)[0]

    async def fresh(name: str) -> tuple[str, Any]:
        database = f"odb_queue_{os.getpid()}_{name}"
        await pg_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await pg_admin(f'CREATE DATABASE "{database}"')
        url = f"{base}/{database}".replace("postgresql://", "postgresql+asyncpg://", 1)
        db = Database(url)
        await db.migrate()
        await db.close()

        async def cleanup() -> None:
            await pg_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

        return url, cleanup

    rows: list[Row] = []
    raw_rates = {}
    for workers in (1, 4):
        url, cleanup = await fresh(f"raw{workers}")
        db = Database(url)
        await _fill(db, RAW_TASKS // 2)
        sql = _queue_sql(db)
        await db.close()
        dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
        args = [(dsn, sql, f"raw{i}") for i in range(workers)]
        elapsed, counts = await asyncio.to_thread(_in_processes, _raw_asyncpg_worker, args)
        assert sum(counts) == RAW_TASKS // 2, counts
        raw_rates[workers] = (RAW_TASKS // 2) / elapsed
        await cleanup()
    for loop in LOOPS:
        for workers in WORKER_COUNTS:
            url, cleanup = await fresh(f"package{workers}{loop.replace(' ', '')}")
            rate = await package_throughput(url, workers, loop=loop)
            await cleanup()
            baseline = raw_rates[min(workers, 4)]
            rows.append(
                Row(
                    f"{loop}, {workers} worker process(es)",
                    f"{rate:,.0f} tasks/s",
                    f"raw asyncpg, {min(workers, 4)} process(es) {baseline:,.0f}/s",
                    rate / baseline,
                    "(reported)",
                    True,
                )
            )
    rows += await depth_rows(fresh, settle=lambda: pg_admin("CHECKPOINT"))
    print_table("PostgreSQL work queue", rows)


async def run() -> None:
    await run_sqlite()
    await run_postgresql()
