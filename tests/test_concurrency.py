"""Concurrent writers, in one process and in several, on both engines:
no "database is locked", no lost row, no lost update."""

from __future__ import annotations

import asyncio
import multiprocessing
from typing import Any

from orchestrator_db import Database, TaskStatus
from tests.helpers import task

WRITERS = 8
ROUNDS = 40


async def _writer(db: Database, name: str, rounds: int) -> int:
    done = 0
    for round_ in range(rounds):
        async with db.unit_of_work() as uow:
            added = await uow.tasks.add(task(title=f"{name}-{round_}", task_type=name))
            await uow.tasks.update_status(added.id, TaskStatus.RUNNING)
            call = await uow.tool_executions.start(added.id, "shell", {"round": round_})
            await uow.tool_executions.finish(call.id, "completed")
            await uow.commit()
        done += 1
    return done


async def _increment(db: Database, times: int) -> None:
    for _ in range(times):
        async with db.unit_of_work() as uow:
            entry = await uow.configurations.get("counter", for_update=True)
            await uow.configurations.set("counter", int(entry.value) + 1)
            await uow.commit()


async def _totals(db: Database) -> tuple[int, int, int]:
    async with db.unit_of_work(read_only=True) as uow:
        return (
            await uow.tasks.count(),
            await uow.tasks.count(status=TaskStatus.RUNNING),
            await uow.tool_executions.count(status="completed"),
        )


async def test_eight_concurrent_writers_in_one_process(db: Database) -> None:
    results = await asyncio.gather(*(_writer(db, f"w{i}", ROUNDS) for i in range(WRITERS)))
    assert results == [ROUNDS] * WRITERS
    assert await _totals(db) == (WRITERS * ROUNDS,) * 3
    async with db.unit_of_work(read_only=True) as uow:
        for i in range(WRITERS):
            assert await uow.tasks.count(task_type=f"w{i}") == ROUNDS


async def test_read_modify_write_with_a_row_lock_loses_no_update(db: Database) -> None:
    async with db.unit_of_work() as uow:
        await uow.configurations.set("counter", 0)
        await uow.commit()
    await asyncio.gather(*(_increment(db, 15) for _ in range(WRITERS)))
    async with db.unit_of_work() as uow:
        assert await uow.configurations.get_value("counter") == WRITERS * 15


def _process_main(url: str, options: dict[str, Any], name: str, writers: int, rounds: int) -> int:
    async def run() -> int:
        db = Database(url, **options)
        try:
            counts = await asyncio.gather(
                *(_writer(db, f"{name}.{i}", rounds) for i in range(writers))
            )
            await _increment(db, rounds)
            return sum(counts)
        finally:
            await db.close()

    return asyncio.run(run())


async def test_two_processes_against_one_database(
    database_url: str, database_options: dict[str, Any]
) -> None:
    db = Database(database_url, **database_options)
    async with db.unit_of_work() as uow:
        await uow.configurations.set("counter", 0)
        await uow.commit()
    context = multiprocessing.get_context("spawn")
    loop = asyncio.get_running_loop()
    with context.Pool(2) as pool:
        jobs: list[Any] = [
            pool.apply_async(_process_main, (database_url, database_options, f"p{p}", 4, 30))
            for p in range(2)
        ]
        done = await loop.run_in_executor(None, lambda: [job.get(timeout=240) for job in jobs])
    assert done == [4 * 30, 4 * 30]
    try:
        assert await _totals(db) == (2 * 4 * 30,) * 3
        async with db.unit_of_work() as uow:
            assert await uow.configurations.get_value("counter") == 2 * 30
    finally:
        await db.close()
