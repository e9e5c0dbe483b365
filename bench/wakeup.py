"""Wake-ups: from a submit's commit to a waiting worker's claim, and what
idle workers cost.

A worker waits in ``claim(wait=...)``; tasks are submitted one at a time, a
few milliseconds apart, and the latency is the claim's return minus the
submit's commit (wall clocks of one machine). Measured with the worker in
another process (PostgreSQL: NOTIFY; SQLite: polling, the only way across
processes), in the same process (woken at commit), and against the same
worker polling only (no LISTEN, no in-process wake-up), in the same run.
Idle workers: claim attempts per second of a worker that waits 10 s for
work that never comes.

``python -m bench wakeup``; ``python -m bench.wakeup worker URL MODE N``
is the worker process.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import asyncpg

from bench.common import ADMIN_DSN, Row, pg_admin, print_table
from orchestrator_db import Database, Task, work_queue
from orchestrator_db._execution.postgresql import PostgreSQLBackend

TASKS = 150
IDLE_SECONDS = 10.0


def _task() -> Task:
    return Task(title="wake", task_type="code", config={})


async def _submit(db: Database) -> float:
    async with db.unit_of_work() as uow:
        await uow.tasks.submit(_task())
        await uow.commit()
    return time.time()


async def _worker(
    url: str,
    mode: str,
    count: int,
    report: asyncio.Queue[float] | None,
    shared: Database | None = None,
) -> int:
    """Claim ``count`` tasks (``mode`` "idle": wait once, for nothing) with
    ``shared`` or a ``Database`` of its own; returns the claim attempts
    made. Claim times go to ``report`` or stdout."""
    if mode == "poll":
        PostgreSQLBackend.cannot_listen = lambda self, settings: "polling only"  # type: ignore[method-assign]
    attempts = 0
    claimed = work_queue.claimed

    async def counted(*args: object, **kwargs: object) -> object:
        nonlocal attempts
        attempts += 1
        return await claimed(*args, **kwargs)  # type: ignore[arg-type]

    work_queue.claimed = counted  # type: ignore[assignment]
    db = Database(url) if shared is None else shared
    try:
        async with db.queue_worker("w") as worker:
            await worker.claim(wait=timedelta(seconds=0.1))  # connected, listening
            if report is None:
                print("ready", flush=True)
            else:
                report.put_nowait(0.0)
            if mode == "idle":
                attempts = 0
                await worker.claim(wait=timedelta(seconds=IDLE_SECONDS))
                return attempts
            for _ in range(count):
                task = await worker.claim(wait=timedelta(seconds=10))
                now = time.time()
                assert task is not None
                if report is None:
                    print(f"claimed {now}", flush=True)
                else:
                    report.put_nowait(now)
                await worker.complete(task.id)
    finally:
        work_queue.claimed = claimed
        if shared is None:
            await db.close()
    return attempts


async def _latencies(db: Database, url: str, mode: str) -> list[float]:
    """Submit-to-claim seconds, the worker in another process (``mode``
    "notify" or "poll") or in this one ("local")."""
    latencies = []
    if mode == "local":
        queue: asyncio.Queue[float] = asyncio.Queue()
        worker = asyncio.create_task(_worker(url, mode, TASKS, queue, db))
        await queue.get()
        for _ in range(TASKS):
            await asyncio.sleep(random.uniform(0.005, 0.015))
            committed = await _submit(db)
            latencies.append(await queue.get() - committed)
        await worker
        return latencies
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.wakeup", "worker", url, mode, str(TASKS),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    assert (await process.stdout.readline()).strip() == b"ready"
    for _ in range(TASKS):
        await asyncio.sleep(random.uniform(0.005, 0.015))
        committed = await _submit(db)
        line = (await process.stdout.readline()).decode().split()
        latencies.append(float(line[1]) - committed)
    await process.wait()
    return latencies


async def _idle_rate(url: str) -> float:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.wakeup", "worker", url, "idle", "0",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    output, _ = await process.communicate()
    return int(output.split()[-1]) / IDLE_SECONDS


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f} ms"


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    ordered = sorted(latencies)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def _engine_rows(engine: str, url: str) -> list[Row]:
    db = Database(url)
    try:
        await db.migrate()
        other = "notify" if engine == "PostgreSQL" else "poll"
        measured = {mode: await _latencies(db, url, mode) for mode in ("local", other, "poll")}
    finally:
        await db.close()
    idle = await _idle_rate(url)
    poll50, poll99 = _percentiles(measured["poll"])
    rows = []
    for mode, what in (("local", "same process"), ("notify", "another process, NOTIFY")):
        if mode not in measured:
            continue
        p50, p99 = _percentiles(measured[mode])
        rows.append(
            Row(
                f"{engine}: submit -> waiting claim ({what}) p50",
                _ms(p50),
                f"polling only p50 {_ms(poll50)}",
                p50 / poll50,
                "<= 0.2x",
                p50 / poll50 <= 0.2,
            )
        )
        rows.append(
            Row(
                f"{engine}: submit -> waiting claim ({what}) p99",
                _ms(p99),
                f"polling only p99 {_ms(poll99)}",
                p99 / poll99,
                "(information)",
                True,
            )
        )
    if engine == "SQLite":
        p50, p99 = _percentiles(measured["poll"])
        rows.append(
            Row(
                "SQLite: submit -> waiting claim (another process)",
                f"p50 {_ms(p50)}",
                f"p99 {_ms(p99)}",
                p99 / 1.0,
                "p99 <= 1 s",
                p99 <= 1.0,
            )
        )
    busy = 1 / 0.05  # a worker polling every 50 ms
    rows.append(
        Row(
            f"{engine}: idle worker's claims per second",
            f"{idle:.2f}/s",
            f"polling every 50 ms {busy:.0f}/s",
            idle / busy,
            "<= 0.02x" if engine == "PostgreSQL" else "<= 0.1x",
            idle / busy <= (0.02 if engine == "PostgreSQL" else 0.1),
        )
    )
    return rows


async def run() -> None:
    directory = Path(tempfile.mkdtemp(prefix="odb-bench-wakeup-"))
    try:
        rows = await _engine_rows("SQLite", f"sqlite+aiosqlite:///{directory / 'wake.db'}")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    try:
        await pg_admin("SELECT 1")
    except (OSError, asyncpg.PostgresError) as error:
        print(f"\n!! PostgreSQL wake-up benchmark SKIPPED: {ADMIN_DSN} unreachable ({error})")
    else:
        database = f"odb_wakeup_{os.getpid()}"
        await pg_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await pg_admin(f'CREATE DATABASE "{database}"')
        try:
            base = ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
            rows += await _engine_rows("PostgreSQL", f"{base}/{database}")
        finally:
            await pg_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    print_table("Wake-ups", rows)


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        url, mode, count = sys.argv[2], sys.argv[3], int(sys.argv[4])
        made = asyncio.run(_worker(url, mode, count, None))
        print(f"attempts {made}", flush=True)
    else:
        asyncio.run(run())
