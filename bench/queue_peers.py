"""The PostgreSQL work queue beside the job queues a user would pick instead
(``python -m bench queue_peers``; pgqueuer and procrastinate come from the
``bench`` extra).

Each contender drains the same number of no-op jobs with the same number of
worker processes, each worker as its library documents its fastest use:
ours, a ``db.queue_worker`` connection claiming and completing one task per
transaction (``complete_and_claim``), and its ``run()`` claiming ten at a
time and completing them with the next claim (one transaction per ten),
each with and without a ``task_types`` filter; pgqueuer's ``QueueManager``
in drain mode with its default batch of ten; procrastinate's worker
(``wait=False``: it stops when the queue is empty); and raw asyncpg
running the package's own claim and completion SQL one task at a time.
Throughput is jobs per second from the moment every worker is ready to the
moment the queue is empty, the median of interleaved rounds; every
contender gets a database of its own each time.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
from typing import Any

import asyncpg

from bench.common import ADMIN_DSN, pg_admin
from bench.queue import _in_processes, _queue_sql, _raw_asyncpg_worker
from orchestrator_db import Database, Task
from orchestrator_db.testing.database import PostgresServer

JOBS = 5_000
WORKERS = 4
#: Each contender drains a queue once per round; the figure is the median.
ROUNDS = 3


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _drained(url: str, worker: Any, args: list[tuple[Any, ...]]) -> float:
    """Jobs per second of ``worker`` processes draining the loaded queue at
    ``url``. Its tables are analyzed first, as autovacuum would soon after
    a load (the server these benchmarks run on may have it off): without
    statistics, PostgreSQL's plans are guesses, different per library."""
    connection = await asyncpg.connect(_dsn(url))
    try:
        await connection.execute("ANALYZE")
    finally:
        await connection.close()
    elapsed, counts = await asyncio.to_thread(_in_processes, worker, args)
    assert sum(counts) == JOBS, counts
    return JOBS / elapsed


# ------------------------------------------------------------------ ours


def _ours_worker(url: str, name: str, types: bool, batch: int, ready: Any, go: Any) -> int:
    async def noop(task: Task) -> None:
        return None

    async def run() -> int:
        db = Database(url)
        done = 0
        try:
            kinds = {"code"} if types else None
            async with db.queue_worker(name, task_types=kinds) as worker:
                ready.set()
                await asyncio.to_thread(go.wait)
                if batch > 1:
                    return (await worker.run(noop, prefetch=batch)).completed
                task = await worker.claim()
                while task is not None:
                    task = await worker.complete_and_claim(task.id)
                    done += 1
            return done
        finally:
            await db.close()

    return asyncio.run(run())


async def _ours(url: str, *, types: bool, batch: int = 1) -> float:
    db = Database(url)
    try:
        await db.migrate()
        for start in range(0, JOBS, 5_000):
            async with db.unit_of_work() as uow:
                size = min(5_000, JOBS - start)
                await uow.tasks.submit_many(
                    [Task(title="noop", task_type="code", config={}) for _ in range(size)]
                )
                await uow.commit()
    finally:
        await db.close()
    return await _drained(url, _ours_worker, [(url, f"w{i}", types, batch) for i in range(WORKERS)])


# ------------------------------------------------------------ raw asyncpg


async def _raw(url: str) -> float:
    db = Database(url)
    try:
        await db.migrate()
        async with db.unit_of_work() as uow:
            await uow.tasks.submit_many(
                [Task(title="noop", task_type="code", config={}) for _ in range(JOBS)]
            )
            await uow.commit()
        sql = _queue_sql(db)
    finally:
        await db.close()
    args = [(_dsn(url), sql, f"raw{i}") for i in range(WORKERS)]
    return await _drained(url, _raw_asyncpg_worker, args)


# --------------------------------------------------------------- pgqueuer


def _pgqueuer_worker(dsn: str, ready: Any, go: Any) -> int:
    from pgqueuer import AsyncpgDriver, Queries, QueueManager
    from pgqueuer.domain.types import QueueExecutionMode

    async def run() -> int:
        connection = await asyncpg.connect(dsn)
        manager = QueueManager(Queries(AsyncpgDriver(connection)))
        done = 0

        @manager.entrypoint("noop")
        async def noop(job: Any) -> None:
            nonlocal done
            done += 1

        ready.set()
        await asyncio.to_thread(go.wait)
        await manager.run(mode=QueueExecutionMode.drain, batch_size=10)
        await connection.close()
        return done

    return asyncio.run(run())


async def _pgqueuer(url: str) -> float:
    from pgqueuer import AsyncpgDriver, Queries

    connection = await asyncpg.connect(_dsn(url))
    queries = Queries(AsyncpgDriver(connection))
    await queries.install()
    await queries.enqueue(["noop"] * JOBS, [None] * JOBS, [0] * JOBS)
    await connection.close()
    return await _drained(url, _pgqueuer_worker, [(_dsn(url),) for _ in range(WORKERS)])


# ---------------------------------------------------------- procrastinate


def _procrastinate_worker(dsn: str, ready: Any, go: Any) -> int:
    os.environ["ODB_BENCH_PROCRASTINATE_DSN"] = dsn
    from bench.queue_peer_tasks import app, done

    async def run() -> int:
        async with app.open_async():
            ready.set()
            await asyncio.to_thread(go.wait)
            await app.run_worker_async(wait=False, concurrency=1, install_signal_handlers=False)
        return done[0]

    return asyncio.run(run())


async def _procrastinate(url: str) -> float:
    """In a process of its own: its app reads the database at import."""
    done = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.queue_peers", "procrastinate", url,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await done.communicate()
    return float(out.decode().strip().splitlines()[-1])


async def _procrastinate_here(url: str) -> float:
    os.environ["ODB_BENCH_PROCRASTINATE_DSN"] = _dsn(url)
    from bench.queue_peer_tasks import app, noop

    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        for start in range(0, JOBS, 1_000):
            await noop.batch_defer_async(*[{} for _ in range(min(1_000, JOBS - start))])
    return await _drained(url, _procrastinate_worker, [(_dsn(url),) for _ in range(WORKERS)])


async def run() -> None:
    try:
        import pgqueuer  # noqa: F401
        import procrastinate  # noqa: F401
    except ImportError:
        print("\nQueue peers: SKIPPED, install the bench extra (pip install -e '.[dev,bench]')")
        return
    try:
        await pg_admin("SELECT 1")
    except (OSError, asyncpg.PostgresError):
        print("\nQueue peers: SKIPPED, PostgreSQL is not reachable")
        return
    server = PostgresServer(ADMIN_DSN)
    contenders = {
        "orchestrator_db queue worker": lambda url: _ours(url, types=False),
        "  same, task_types={'code'}": lambda url: _ours(url, types=True),
        "  run(), batches of 10": lambda url: _ours(url, types=False, batch=10),
        "  run(), batches of 10, typed": lambda url: _ours(url, types=True, batch=10),
        "pgqueuer (batches of 10)": _pgqueuer,
        "procrastinate": _procrastinate,
        "raw asyncpg, one at a time": _raw,
    }
    found: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for round_ in range(ROUNDS):
        # Interleaved, each round started by the next contender in turn.
        shift = round_ % len(names)
        for number, name in enumerate([*names[shift:], *names[:shift]]):
            database = f"odb_bench_queue_peers_{os.getpid()}_{number}"
            url = await server.create(database)
            try:
                found[name].append(await contenders[name](url))
            finally:
                await server.drop(database)
    rates = {name: statistics.median(runs) for name, runs in found.items()}
    batched, raw = rates["pgqueuer (batches of 10)"], rates["raw asyncpg, one at a time"]
    print(
        f"\nPostgreSQL queue: {JOBS:,} no-op jobs, {WORKERS} worker processes "
        f"(median of {ROUNDS} interleaved rounds)"
    )
    print(f"  {'':34s} {'jobs/s':>8s}   {'/ pgqueuer':>10s} {'/ raw asyncpg':>14s}")
    for name, rate in rates.items():
        print(f"  {name:34s} {rate:8,.0f}   {rate / batched:9.2f}x {rate / raw:13.2f}x")


if __name__ == "__main__":
    if sys.argv[1:2] == ["procrastinate"]:
        print(asyncio.run(_procrastinate_here(sys.argv[2])))
    else:
        asyncio.run(run())
